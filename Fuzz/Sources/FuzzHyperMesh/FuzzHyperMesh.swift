import FuzzSupport
import HyperMesh

/// libFuzzer target: block manifests, storage receipts, HyperMesh wire messages and audit log files.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHyperMesh(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzInput(data, size)
    BlockManifest.fuzz(bytes)
    StorageReceipt.fuzz(bytes)
    HyperMeshMessage.fuzz(bytes)
    AuditLog.fuzz(bytes)
    return 0
}

@_cdecl("FuzzHyperMesh_main")
public func fuzzHyperMeshMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzHyperMesh)
}
