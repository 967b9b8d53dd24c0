import FuzzSupport
import Nexus

/// libFuzzer target: Nexus decoders (DHT messages and request envelopes, signed name and node
/// records), each fed every input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzNexus(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzInput(data, size)
    DHTMessage.fuzz(bytes)
    NameRecord.fuzz(bytes)
    DHTRequestEnvelope.fuzz(bytes)
    SignedNodeRecord.fuzz(bytes)
    Enrolment.fuzz(bytes)
    return 0
}

@_cdecl("FuzzNexus_main")
public func fuzzNexusMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzNexus)
}
