internal import Foundation
internal import HTTPTypes
internal import Hummingbird
internal import NotificationsCore

/// `/v1/events`: decode, validate, call `EventService`, encode.
struct EventRoutes {
    let events: EventService

    func register(on routes: RouteRegistrar<some RouterMethods<AppRequestContext>>) {
        routes.on(.post, "/events", accept)
        routes.on(.get, "/events/{eventId}", status)
    }

    /// 202 `accepted` or `in_progress`; 200 `duplicate`.
    @Sendable func accept(_ request: Request, context: AppRequestContext) async throws -> Response {
        let event = try NewEvent(json: try await RequestBody.json(request, context: context))
        let answer = try await events.accept(scope: try Self.scope(context), event)
        return .json(answer.status == .duplicate ? .ok : .accepted) { answer.write(to: &$0) }
    }

    @Sendable func status(_ request: Request, context: AppRequestContext) async throws -> Response {
        let eventId = try Validation.userID(context.parameters.get("eventId")?.percentDecoded ?? "", field: "eventId")
        guard let record = try await events.status(scope: try Self.scope(context), eventId: eventId) else {
            throw Problem.notFound("No event \(eventId) for this API key.")
        }
        return .json { record.write(to: &$0) }
    }

    /// Event ids are scoped per API key.
    static func scope(_ context: AppRequestContext) throws -> String {
        guard let key = context.apiKey else { throw Problem.unauthorized() }
        return key.name
    }
}
