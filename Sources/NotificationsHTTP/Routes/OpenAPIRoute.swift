internal import Hummingbird
internal import NIOCore

/// `GET /openapi.yaml`: the contract, as built into the binary.
struct OpenAPIRoute {
    func register(on routes: RouteRegistrar<some RouterMethods<AppRequestContext>>) {
        routes.on(.get, "/openapi.yaml", document)
    }

    @Sendable func document(_ request: Request, context: AppRequestContext) async throws -> Response {
        Response(status: .ok, headers: [.contentType: "application/yaml"], body: .init(byteBuffer: ByteBuffer(string: OpenAPIDocument.yaml)))
    }
}
