internal import Foundation
public import Hummingbird
public import NotificationsCore
internal import NIOCore

/// Reading JSON request bodies the contract's way: `application/json` only (415), at most
/// 64 KiB (413), valid JSON (400 `malformed_json`).
public enum RequestBody {
    public static let maxBytes = 64 * 1024

    public static func json(_ request: Request, context: AppRequestContext) async throws -> JSONValue {
        guard isJSON(request.headers[.contentType]) else { throw Problem.unsupportedMediaType() }
        var request = request
        let buffer = try await collect(&request)
        do {
            return try JSONValue.parse(buffer.readableBytesView)
        } catch {
            throw Problem.malformedJSON()
        }
    }

    /// Reads the whole body (at most `maxBytes`, else 413) and leaves it in the request for later readers.
    public static func collect(_ request: inout Request) async throws -> ByteBuffer {
        do {
            return try await request.collectBody(upTo: maxBytes)
        } catch is NIOTooManyBytesError {
            throw Problem.payloadTooLarge()
        }
    }

    /// `application/json` or any `application/*+json`, with or without parameters (`; charset=utf-8`).
    static func isJSON(_ contentType: String?) -> Bool {
        guard let contentType else { return false }
        let mediaType = contentType.split(separator: ";", maxSplits: 1).first.map { $0.trimmingCharacters() }?.lowercased() ?? ""
        return mediaType == "application/json" || (mediaType.hasPrefix("application/") && mediaType.hasSuffix("+json"))
    }
}

extension Substring {
    /// Without leading and trailing spaces and tabs (on bytes: these are ASCII).
    func trimmingCharacters() -> String {
        let isBlank = { (byte: UInt8) in byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        guard let first = utf8.firstIndex(where: { !isBlank($0) }), let last = utf8.lastIndex(where: { !isBlank($0) }) else { return "" }
        return String(self[first...last])
    }
}

extension String {
    /// A path parameter decoded: most have no `%` at all, and Foundation's decoding is costly
    /// enough to show in profiles of the cached read.
    var percentDecoded: String? {
        utf8.contains(UInt8(ascii: "%")) ? removingPercentEncoding : self
    }
}
