import Foundation
import HTTPTypes
import HummingbirdTesting
import InMemoryLogging
import Logging
import NotificationsCore
import Testing
import TestSupport

/// `X-Request-Id`: accepted from the client when sane, else generated; echoed; in every log line of the request.
@Suite("Request ids in responses and logs")
struct RequestLogTests {
    static let requestID = HTTPField.Name("X-Request-Id")!

    @Test func aSaneClientIDIsEchoedAndAnythingElseIsReplaced() async throws {
        try await withHarness { harness in
            var headers = authorized
            headers[Self.requestID] = "client-id-123"
            #expect(try await harness.client.get("/v1/users/u/notifications", headers: headers).headers[Self.requestID] == "client-id-123")
            for bad in [String(repeating: "a", count: 129), "two words", "tab\there"] {
                headers[Self.requestID] = bad
                let generated = try await harness.client.get("/v1/users/u/notifications", headers: headers).headers[Self.requestID]
                #expect(generated != nil && generated != bad && !(generated ?? "").isEmpty)
            }
            // Generated ids differ per request, on every route (errors and health included).
            let first = try await harness.client.get("/health/live", headers: [:]).headers[Self.requestID]
            let second = try await harness.client.get("/nowhere", headers: [:]).headers[Self.requestID]
            #expect(first != nil && second != nil && first != second)
        }
    }

    @Test func everyLogLineWrittenForARequestNamesItsID() async throws {
        try await withHarness { harness in
            _ = try await harness.client.create(recipient: "logged")
            harness.mongo.pause()
            var headers = jsonHeaders
            headers[Self.requestID] = "frozen-request"
            let response = try await harness.client.post("/v1/notifications", json: #"{"recipientId":"logged","type":"x"}"#, headers: headers)
            harness.mongo.resume()
            #expect(response.status == .serviceUnavailable)
            let lines = harness.logs.entries.filter { $0.metadata["request_id"]?.description == "frozen-request" }.map(\.message.description)
            // The store's warning, logged by the error middleware while serving it, carries it.
            #expect(lines.contains("Store unavailable"), "\(lines)")
        }
    }
}
