import FoundationEssentials
import HangarCore
import HTTPTypes
import HummingbirdWSClient
import Logging
import NIOCore
import Synchronization

/// How a drone reaches its controller.
public struct ControllerLinkConfiguration: Sendable {
    /// The controller's base URL ("http://10.0.0.1:8080").
    public var url: String
    /// Its bearer token, when it has one.
    public var token: String?
    public var cluster: ClusterName
    public var name: DroneName
    public var pool: PoolName = .default
    /// Where proxies reach this drone's ingress ("address:port").
    public var ingress: String?
    /// Reconnects wait from `reconnectMin`, doubling up to `reconnectMax`, with jitter.
    public var reconnectMin: Duration = .milliseconds(100)
    public var reconnectMax: Duration = .seconds(5)

    public init(url: String, cluster: ClusterName, name: DroneName) {
        self.url = url
        self.cluster = cluster
        self.name = name
    }
}

/// The drone's side of the controller protocol (`DroneMessage`): one WebSocket, reconnected
/// with backoff. Actions are taken idempotently (a spawn of a backend id it has is a no-op)
/// and acknowledged; status events go out from the drone's store until acknowledged, again
/// after every reconnect.
///
/// Leases: every heartbeat renews the keys of this drone's backends. Without a renewal the
/// drone ends them on its own clock, before the store frees their keys: SIGTERM at 2/3 of
/// the lease after the last renewed heartbeat was sent, SIGKILL at 5/6 (reason
/// key-expired); the store's lease runs out at 1.
public final class ControllerLink: Sendable {
    let drone: Drone
    let configuration: ControllerLinkConfiguration
    let logger: Logger

    struct Lease {
        var seconds = 30
        /// This clock's instant until which the keys hold: the send time of the last
        /// renewed heartbeat plus a lease.
        var validUntil: ContinuousClock.Instant?
        var sent: [Int64: ContinuousClock.Instant] = [:]
        var seq: Int64 = 0
    }

    private let lease = Mutex(Lease())
    /// Backends the controller asked for: the ones the lease guards.
    private let owned = Mutex<Set<BackendID>>([])

    public init(drone: Drone, configuration: ControllerLinkConfiguration, logger: Logger) {
        self.drone = drone
        self.configuration = configuration
        self.logger = logger
    }

    /// Keeps the link (and the lease guard) until cancelled.
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.guardLeases() }
            group.addTask { await self.keepConnected() }
            await group.next()
            group.cancelAll()
        }
    }

    private func keepConnected() async {
        let url = controllerSocketURL(configuration.url, cluster: configuration.cluster, socket: "drone-socket")
        await reconnecting(
            to: url, minimum: configuration.reconnectMin, maximum: configuration.reconnectMax, logger: logger
        ) {
            var settings = WebSocketClientConfiguration(maxFrameSize: 1 << 20)
            if let token = configuration.token { settings.additionalHeaders[.authorization] = "Bearer \(token)" }
            try await WebSocketClient.connect(url: url, configuration: settings, logger: logger) { inbound, outbound, _ in
                try await self.session(inbound: inbound, outbound: outbound)
            }
        }
    }

    /// One connection: hello, welcome, then heartbeats, events and actions until it closes.
    private func session(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async throws {
        var messages = inbound.messages(maxSize: 1 << 20).makeAsyncIterator()
        let helloSent = ContinuousClock.now
        let hello = DroneHello(
            drone: configuration.name, pool: configuration.pool, capacityBackends: drone.configuration.maxBackends,
            capacityMemory: drone.configuration.memoryBudget?.bytes ?? 0, ingress: configuration.ingress,
            backends: drone.allBackends.map(\.id))
        try await outbound.write(.text(Self.text(DroneMessage.hello(hello))))
        guard let first = try await messages.next() else { return }
        let welcome: DroneWelcome
        switch try Self.decode(first) {
        case .welcome(let body):
            welcome = body
        case .refused(let refusal):
            logger.error("the controller refused this drone", metadata: ["reason": "\(refusal.message)"])
            return
        default:
            logger.error("the controller's first message is not a welcome")
            return
        }
        // The controller renewed this drone's leases when it took the hello.
        lease.withLock {
            $0.seconds = welcome.lease_seconds
            $0.validUntil = helloSent + .seconds(welcome.lease_seconds)
            $0.sent = [:]
        }
        logger.info("connected to the controller", metadata: ["controller.url": "\(configuration.url)"])
        let heartbeat = Duration.milliseconds(max(50, welcome.heartbeat_ms))

        let (outbox, post) = AsyncStream<DroneMessage>.makeStream()
        // Actions and event acks (store writes, and for a spawn a sandbox) are done in order
        // by a task of their own: a burst never holds up the lease renewals read behind them.
        let (work, queue) = AsyncStream<DroneMessage>.makeStream()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await message in outbox { try await outbound.write(.text(Self.text(message))) }
            }
            group.addTask {
                for await message in work {
                    switch message {
                    case .action(let order):
                        self.take(order)
                        post.yield(.actionAck(ActionAck(id: order.id)))
                    case .eventAck(let ack):
                        do {
                            try self.drone.store?.acknowledge(upTo: ack.through)
                        } catch {
                            self.logger.error("acknowledging events failed", metadata: ["error": "\(error)"])
                        }
                    default:
                        break
                    }
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    let (seq, running) = (self.lease.withLock { state -> Int64 in
                        state.seq += 1
                        state.sent[state.seq] = .now
                        return state.seq
                    }, self.drone.running.count)
                    post.yield(.heartbeat(DroneHeartbeat(seq: seq, running: running)))
                    try await Task.sleep(for: heartbeat)
                }
            }
            group.addTask { try await self.forwardEvents(post) }
            while let frame = try await messages.next() {
                let message = try Self.decode(frame)
                switch message {
                case .renewed(let renewal):
                    let roundTrip = lease.withLock { state -> Duration? in
                        defer { state.sent = state.sent.filter { $0.key > renewal.seq } }
                        guard let sent = state.sent.removeValue(forKey: renewal.seq) else { return nil }
                        state.validUntil = max(state.validUntil ?? sent, sent + .seconds(state.seconds))
                        return .now - sent
                    }
                    if let roundTrip, roundTrip > .seconds(1) {
                        logger.warning("a lease renewal took long", metadata: ["renewal.duration": "\(roundTrip)"])
                    }
                case .action, .eventAck:
                    queue.yield(message)
                case .refused(let refusal):
                    logger.error("the controller closed the session", metadata: ["reason": "\(refusal.message)"])
                default:
                    break
                }
            }
            queue.finish()
            post.finish()
            group.cancelAll()
        }
    }

    /// Sends the events the controller has not acknowledged, then each new one.
    private func forwardEvents(_ post: AsyncStream<DroneMessage>.Continuation) async throws {
        guard let store = drone.store else { return }
        // Woken by a new event, or once a second (an event recorded before the watch
        // began): one stream fed by both, never a cancelled wait.
        let (wakeups, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let changes = store.changes()
        let watcher = Task {
            for await _ in changes { wake.yield() }
        }
        let ticker = Task {
            while !Task.isCancelled {
                wake.yield()
                try? await Task.sleep(for: .seconds(1))
            }
        }
        defer {
            watcher.cancel()
            ticker.cancel()
            wake.finish()
        }
        var sent: Int64 = 0
        for await _ in wakeups {
            while true {
                let events = try store.unacknowledged(after: sent, limit: DroneEvents.limit)
                guard let last = events.last else { break }
                post.yield(
                    .events(
                        DroneEvents(
                            events: events.map {
                                BackendEventReport(
                                    id: $0.id, backend: $0.backend, status: $0.status, reason: $0.reason,
                                    exitCode: $0.exitCode)
                            })))
                sent = last.id
            }
        }
    }

    /// Takes an action; a repeat is a no-op.
    func take(_ order: ActionOrder) {
        guard let id = try? BackendID(order.backend) else {
            logger.error("an action names no backend", metadata: ["action.id": "\(order.id)"])
            return
        }
        var logger = self.logger
        logger[metadataKey: "backend.id"] = "\(id)"
        switch order.kind {
        case "spawn":
            if drone.backend(id) != nil {  // taken before
                owned.withLock { _ = $0.insert(id) }
                return
            }
            if (try? drone.store?.backend(id)) != nil { return }  // taken by an earlier run: recorded lost
            guard let spawn = order.spawn else {
                drone.store?.recordRefused(id: id, key: "", image: "")
                return logger.error("a spawn action without what to spawn")
            }
            do {
                var request = try AdminAPI.spawnRequest(
                    AdminAPI.SpawnBody(
                        key: spawn.key, image: spawn.executable.image.rawValue, command: spawn.executable.command,
                        env: spawn.executable.env,
                        limits: spawn.executable.limits.map {
                            AdminAPI.LimitsBody(memory_max: $0.memory_max, pids_max: $0.pids_max, cpu: $0.cpu)
                        },
                        max_idle_seconds: spawn.max_idle_seconds, lifetime_limit_seconds: spawn.lifetime_limit_seconds,
                        fencing_token: UInt64(max(1, spawn.fencing_token))))
                request.namespace = try NamespaceName(spawn.namespace)
                _ = try drone.spawn(request, id: id)
                owned.withLock { _ = $0.insert(id) }
            } catch {
                logger.error("spawn refused", metadata: ["error": "\(error)"])
                drone.store?.recordRefused(id: id, key: spawn.key, image: spawn.executable.image.rawValue)
            }
        case "terminate":
            drone.backend(id)?.terminate(.external)
        case "hard-terminate":
            drone.backend(id)?.kill(.external)
        default:
            logger.error("an action of an unknown kind", metadata: ["action.kind": "\(order.kind.prefix(32))"])
        }
    }

    /// Ends the controller's backends on this drone's own clock once their keys' lease is
    /// about to run out unrenewed: SIGTERM at 2/3 of a lease, SIGKILL at 5/6.
    private func guardLeases() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(200))
            // Backends the drone has forgotten need no guard (and are not kept for ever).
            // An id joins `owned` only once the drone has its backend, so a snapshot taken
            // under the lock never drops a backend that is being spawned.
            let ids = owned.withLock { set in
                set.formIntersection(drone.allBackends.map(\.id))
                return set
            }
            let (validUntil, seconds) = lease.withLock { ($0.validUntil, $0.seconds) }
            guard let validUntil else { continue }
            let left = validUntil - .now
            let leaseLength = Duration.seconds(seconds)
            guard left <= leaseLength / 3 else { continue }
            for backend in drone.running where ids.contains(backend.id) {
                if left <= leaseLength / 6 {
                    backend.kill(.keyExpired)
                } else {
                    backend.terminate(.keyExpired)
                }
            }
        }
    }

    static func decode(_ frame: WebSocketMessage) throws -> DroneMessage {
        switch frame {
        case .text(let text): try JSONDecoder().decode(DroneMessage.self, from: Data(text.utf8))
        case .binary(let buffer): try JSONDecoder().decode(DroneMessage.self, from: Data(buffer.readableBytesView))
        }
    }

    static func text(_ message: DroneMessage) -> String {
        (try? JSONEncoder().encode(message)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}
