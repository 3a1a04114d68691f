extension Sequence<UInt8> {
    /// Lower-case hex, two digits a byte (digests as keys and markers).
    var hexString: String {
        map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }
}
