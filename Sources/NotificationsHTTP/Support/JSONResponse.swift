public import HTTPTypes
public import Hummingbird
public import NotificationsCore

extension Response {
    /// A JSON response from bytes the `JSONWriter` produced.
    public static func json(_ status: HTTPResponse.Status = .ok, headers: HTTPFields = [:], _ write: (inout JSONWriter) -> Void) -> Response {
        var writer = JSONWriter()
        write(&writer)
        var fields = headers
        fields[.contentType] = "application/json"
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: writer.bytes)))
    }
}
