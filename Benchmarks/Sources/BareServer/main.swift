import Hummingbird
import NIOCore

/// The yardstick of `scripts/bench`: Hummingbird 2 with no middleware, answering
/// `GET /bytes/{n}` with a fixed JSON body of n bytes (n ≤ 1 MiB). Each row of the benchmark
/// is compared with this server returning a body of the size of that row's response, in the
/// same run, so the ratio shows what the service's own work costs.
///
///     bare-server PORT
let port = CommandLine.arguments.dropFirst().first.flatMap { Int($0) } ?? 8081
let maximum = 1 << 20
// One buffer, sliced per response: a slice shares storage, so no response copies bytes.
// (The bytes are not JSON; the client only counts them.)
let filler = ByteBuffer(repeating: UInt8(ascii: "x"), count: maximum)

let router = Router()
router.get("/bytes/{n}") { _, context -> Response in
    let size = context.parameters.get("n", as: Int.self) ?? -1
    guard (2...maximum).contains(size) else { throw HTTPError(.badRequest, message: "2 ≤ n ≤ \(maximum)") }
    let body = filler.getSlice(at: 0, length: size)!
    return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: body))
}
let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)))
try await app.runService()
