import FuzzSupport
import STOQ

/// libFuzzer target: access grants (binary and `stoqgrant1:` text forms), revocation lists and the
/// GRANT/GRANT_ACCEPTED/REVOCATIONS/REVOCATIONS_REQUEST frames.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzGrant(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzInput(data, size)
    AccessGrant.fuzz(bytes)
    GrantMessage.fuzz(bytes)
    return 0
}

@_cdecl("FuzzGrant_main")
public func fuzzGrantMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzGrant)
}
