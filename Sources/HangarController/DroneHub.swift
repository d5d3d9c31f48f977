import FoundationEssentials
import HangarCore
import HangarStore
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import Synchronization

/// The drones connected to this controller, one session each, and how to reach them.
final class DroneHub: Sendable {
    struct Session: Sendable {
        let id: Int
        let outbox: AsyncStream<DroneMessage>.Continuation
    }

    private let sessions = Mutex<[DroneName: Session]>([:])
    private let nextID = Atomic<Int>(0)

    /// Makes `outbox` the drone's session, ending an older one (a reconnect that came
    /// before the old connection was seen to close).
    func attach(_ drone: DroneName, _ outbox: AsyncStream<DroneMessage>.Continuation) -> Int {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).newValue
        let old = sessions.withLock { $0.updateValue(Session(id: id, outbox: outbox), forKey: drone) }
        old?.outbox.finish()
        return id
    }

    func detach(_ drone: DroneName, session: Int) {
        sessions.withLock { table in
            if table[drone]?.id == session { table[drone] = nil }
        }
    }

    /// Sends an order if the drone is connected; otherwise it stays pending in the store
    /// and goes out when the drone connects.
    func send(_ order: ActionOrder, to drone: DroneName) {
        sessions.withLock { $0[drone] }?.outbox.yield(.action(order))
    }

    var connected: Set<DroneName> { sessions.withLock { Set($0.keys) } }
}

/// Items gathered by one task and taken all at once by another.
final class Gathered<Item: Sendable>: Sendable {
    private let items = Mutex<[Item]>([])

    func append(_ item: Item) { items.withLock { $0.append(item) } }

    func take() -> [Item] {
        items.withLock { list in
            defer { list = [] }
            return list
        }
    }
}

extension Controller {
    /// One drone's session on its WebSocket: hello and welcome, then heartbeats (each
    /// renews its keys' leases), events (recorded, acknowledged), action acknowledgements,
    /// and actions sent as they come (the pending ones first, again every few seconds
    /// until acknowledged).
    func serveDrone(cluster: ClusterName, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async {
        var messages = inbound.messages(maxSize: 1 << 20).makeAsyncIterator()
        func refuse(_ why: String) async {
            self.logger.info("drone refused", metadata: ["reason": "\(why)"])
            try? await outbound.write(.text(Self.text(DroneMessage.refused(DroneRefusal(message: why)))))
            try? await outbound.close(.policyViolation, reason: String(why.prefix(100)))
        }
        let hello: DroneHello
        do {
            guard let first = try await messages.next(), case .hello(let body) = try Self.decode(first) as DroneMessage else {
                return await refuse("the first message must be a hello")
            }
            hello = body
        } catch {
            return await refuse("the first message: \(error)")
        }
        guard hello.version == DroneProtocol.version else {
            return await refuse("protocol version \(hello.version) is not this controller's (\(DroneProtocol.version))")
        }
        let name: DroneName
        let pool: PoolName
        do {
            name = try DroneName(hello.drone)
            pool = try PoolName(hello.pool)
        } catch {
            return await refuse("\(error)")
        }
        if let problem = hello.problem { return await refuse(problem) }
        var sessionLogger = self.logger
        sessionLogger[metadataKey: "drone.name"] = "\(name)"
        let logger = sessionLogger
        let lease = configuration.leaseSeconds
        do {
            try await store.registerDrone(
                DroneRegistration(
                    name: name, cluster: cluster, pool: pool, capacityBackends: hello.capacity_backends,
                    capacityMemory: hello.capacity_memory, ingress: hello.ingress))
            // What it no longer runs is lost; the rest keeps its keys.
            let running = Set(hello.backends.compactMap { try? BackendID($0) })
            announce(try await store.markLost(drone: name, except: running))
            _ = try await store.heartbeat(name, renewingLeasesFor: lease)
        } catch {
            logger.error("registering a drone failed", metadata: ["error": "\(error)"])
            return await refuse("the controller's store failed")
        }
        logger.info("drone connected")
        let (outbox, continuation) = AsyncStream<DroneMessage>.makeStream()
        let session = drones.attach(name, continuation)
        defer {
            drones.detach(name, session: session)
            logger.info("drone disconnected")
        }
        continuation.yield(
            .welcome(DroneWelcome(leaseSeconds: lease, heartbeatMilliseconds: Int(configuration.heartbeatInterval.milliseconds))))
        // Three lanes, so that a heartbeat never waits behind a burst of acknowledgements:
        // heartbeats (only the latest matters), acknowledgements (gathered into one
        // transaction), and the read loop itself for events (in order, batched by the drone).
        let (heartbeats, beat) = AsyncStream<DroneHeartbeat>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let acks = Gathered<Int64>()
        let (ackSignal, signalAck) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await message in outbox {
                    guard (try? await outbound.write(.text(Self.text(message)))) != nil else { break }
                }
            }
            group.addTask {
                var lastResend = ContinuousClock.now
                for await heartbeat in heartbeats {
                    do {
                        _ = try await self.store.heartbeat(name, renewingLeasesFor: lease)
                        continuation.yield(.renewed(LeaseRenewal(seq: heartbeat.seq)))
                        // Actions not acknowledged go out again now and then (a new session
                        // gets them at once).
                        if ContinuousClock.now - lastResend >= .seconds(10) {
                            lastResend = .now
                            try await self.sendPending(to: name, continuation)
                        }
                    } catch {
                        logger.error("a heartbeat failed in the store", metadata: ["error": "\(error)"])
                    }
                }
            }
            group.addTask {
                for await _ in ackSignal {
                    let ids = acks.take()
                    if ids.isEmpty { continue }
                    do {
                        try await self.store.acknowledgeActions(ids, drone: name)
                    } catch {
                        logger.error("acknowledging actions failed in the store", metadata: ["error": "\(error)"])
                    }
                }
            }
            do {
                try await sendPending(to: name, continuation)
                while let frame = try await messages.next() {
                    // A message that does not decode ends the session: skipping it could
                    // let a later cumulative acknowledgement cover events never recorded.
                    let message: DroneMessage = try Self.decode(frame)
                    switch message {
                    case .heartbeat(let heartbeat):
                        beat.yield(heartbeat)
                    case .events(let batch):
                        guard let last = batch.events.last else { continue }
                        try await record(batch.events, from: name, logger: logger)
                        continuation.yield(.eventAck(EventAck(through: last.id)))
                    case .actionAck(let ack):
                        acks.append(ack.id)
                        signalAck.yield()
                    case .hello, .welcome, .refused, .renewed, .action, .eventAck:
                        logger.info("a drone sent a controller's message", metadata: ["message.type": "\(message)"])
                    }
                }
            } catch {
                logger.info("drone session ended", metadata: ["error": "\(error)"])
            }
            continuation.finish()
            beat.finish()
            signalAck.finish()
            await group.waitForAll()
        }
    }

    /// Sends the drone's actions that it has not acknowledged.
    func sendPending(to drone: DroneName, _ outbox: AsyncStream<DroneMessage>.Continuation) async throws {
        for action in try await store.pendingActions(of: drone) {
            // An ended backend's actions are done (the store marks them so); never start one.
            guard let backend = try await store.backend(action.backend), backend.status < .terminated else { continue }
            do {
                outbox.yield(.action(try order(for: backend, action: action.id, kind: action.kind)))
            } catch {
                logger.error("an action cannot be encoded", metadata: ["backend.id": "\(backend.id)", "error": "\(error)"])
            }
        }
    }

    /// Records a drone's status events in one transaction; a repeat (or an older status)
    /// changes nothing, and so does an event of a backend that is not the controller's.
    func record(_ reports: [BackendEventReport], from drone: DroneName, logger: Logger) async throws {
        var changes: [StatusChange] = []
        for report in reports {
            guard let id = try? BackendID(report.backend), let status = BackendStatus(rawValue: report.status) else {
                logger.info("a drone event names no backend or status", metadata: ["backend.id": "\(report.backend.prefix(40))"])
                continue
            }
            changes.append(
                StatusChange(
                    backend: id, status: status, reason: report.reason.flatMap(TerminationReason.init(rawValue:)),
                    exitCode: report.exit_code))
        }
        announce(try await store.recordStatuses(changes, from: drone))
    }

    static func decode<Message: Decodable>(_ frame: WebSocketMessage) throws -> Message {
        switch frame {
        case .text(let text): try JSONDecoder().decode(Message.self, from: Data(text.utf8))
        case .binary(let buffer): try JSONDecoder().decode(Message.self, from: Data(buffer.readableBytesView))
        }
    }

    static func text(_ message: some Encodable) -> String {
        (try? JSONEncoder().encode(message)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}
