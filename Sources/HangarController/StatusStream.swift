import FoundationEssentials
import HangarCore
import HangarStore
import Logging
import Synchronization
import HTTPTypes
import Hummingbird
import NIOCore
import ServiceLifecycle

extension Controller {
    /// A backend's status as server-sent events: every event after `after` (the
    /// Last-Event-ID), then each new one as it is recorded, until terminated. A comment
    /// line every 15 seconds keeps idle connections open through proxies.
    func statusStream(_ backend: BackendID, after: Int64) async throws -> Response {
        let live = feed.subscribe(backend)
        let replay = try await withStore { try await store.events(of: backend, after: after) }
        if replay.isEmpty {
            // Nothing to replay: no such backend, or one that has ended and whose end the
            // client has seen (an EventSource reconnecting after the last event).
            guard let record = try await withStore({ try await store.backend(backend) }) else {
                throw ControllerError(.notFound, "no backend \(backend)")
            }
            if record.status == .terminated { return Response(status: .noContent) }
        }
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                var last = after
                func send(_ event: StatusEvent) async throws {
                    let view = BackendStatusView(status: event.status, reason: event.reason, exitCode: event.exitCode, time: event.at)
                    let data = String(decoding: try JSONEncoder.api.encode(view), as: UTF8.self)
                    try await writer.write(ByteBuffer(string: "id: \(event.id)\nevent: status\ndata: \(data)\n\n"))
                    last = event.id
                }
                for event in replay {
                    try await send(event)
                    if event.status == .terminated { return try await writer.finish(nil) }
                }
                // Live events; the feed may carry one the replay already had.
                let (merged, continuation) = AsyncStream<StatusEvent?>.makeStream()
                let pump = Task {
                    for await event in live { continuation.yield(event) }
                    continuation.finish()
                }
                let ticker = Task {
                    while !Task.isCancelled {
                        try await Task.sleep(for: .seconds(15))
                        continuation.yield(nil)
                    }
                }
                defer {
                    pump.cancel()
                    ticker.cancel()
                }
                // A shutdown ends the stream at once (an EventSource reconnects elsewhere).
                try await withGracefulShutdownHandler {
                    for await item in merged {
                        guard let event = item else {
                            try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                            continue
                        }
                        guard event.id > last else { continue }
                        try await send(event)
                        if event.status == .terminated { break }
                    }
                } onGracefulShutdown: {
                    continuation.finish()
                }
                try await writer.finish(nil)
            })
    }

    /// Prometheus text: connects, spawns, errors by kind, drones, followers.
    func metrics() async -> String {
        var lines = [
            "# TYPE hangar_controller_connects_total counter",
            "hangar_controller_connects_total \(counters.connects.load(ordering: .relaxed))",
            "# TYPE hangar_controller_spawns_total counter",
            "hangar_controller_spawns_total \(counters.spawns.load(ordering: .relaxed))",
            "# TYPE hangar_controller_errors_total counter",
        ]
        for (kind, count) in counters.errors.withLock({ $0 }).sorted(by: { $0.key < $1.key }) {
            lines.append("hangar_controller_errors_total{kind=\"\(kind)\"} \(count)")
        }
        lines += [
            "# TYPE hangar_controller_drones_connected gauge",
            "hangar_controller_drones_connected \(drones.connected.count)",
            "# TYPE hangar_controller_proxies_connected gauge",
            "hangar_controller_proxies_connected \(proxies.count)",
            "# TYPE hangar_controller_status_followers gauge",
            "hangar_controller_status_followers \(feed.followers)",
        ]
        return lines.joined(separator: "\n") + "\n"
    }
}
