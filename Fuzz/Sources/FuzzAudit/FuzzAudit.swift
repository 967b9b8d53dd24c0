import FuzzSupport
import STOQ

/// libFuzzer target: audit trail segments (frames, records, signed heads).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAudit(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzInput(data, size)
    AuditSegment.fuzz(bytes)
    AuditSegment.fuzz(AuditSegment.magic + bytes)
    _ = AuditHead(decoding: bytes[...])
    _ = AuditRecord(decoding: bytes[...])
    return 0
}

@_cdecl("FuzzAudit_main")
public func fuzzAuditMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzAudit)
}
