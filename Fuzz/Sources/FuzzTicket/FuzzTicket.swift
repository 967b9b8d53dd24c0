import FuzzSupport
import STOQ

/// libFuzzer target: share tickets (`stoq1…`), binary and text forms.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTicket(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzInput(data, size)
    ShareTicket.fuzz(bytes)
    return 0
}

@_cdecl("FuzzTicket_main")
public func fuzzTicketMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzTicket)
}
