import HangarCore
import HangarStore
import Synchronization

/// Status events as the controller records them, to whoever follows a backend in this
/// process (status streams, connects waiting for a terminating backend to end). Followers
/// subscribe before they read the store, so that no event falls between the two.
final class StatusFeed: Sendable {
    private struct Subscriber {
        let backend: BackendID
        let continuation: AsyncStream<StatusEvent>.Continuation
    }

    private let subscribers = Mutex<[Int: Subscriber]>([:])
    private let nextID = Atomic<Int>(0)

    /// A backend's events from now on; the stream ends after its terminated event, or when
    /// its consumer stops iterating.
    func subscribe(_ backend: BackendID) -> AsyncStream<StatusEvent> {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).newValue
        let (stream, continuation) = AsyncStream<StatusEvent>.makeStream(bufferingPolicy: .bufferingNewest(64))
        continuation.onTermination = { [weak self] _ in
            _ = self?.subscribers.withLock { $0.removeValue(forKey: id) }
        }
        subscribers.withLock { $0[id] = Subscriber(backend: backend, continuation: continuation) }
        return stream
    }

    func publish(_ event: StatusEvent) {
        let targets = subscribers.withLock { $0.values.filter { $0.backend == event.backend }.map(\.continuation) }
        for continuation in targets {
            continuation.yield(event)
            if event.status == .terminated { continuation.finish() }
        }
    }

    var followers: Int { subscribers.withLock { $0.count } }
}

/// Concurrent connects share one store transaction: while one batch commits, the next
/// gathers. No timer, so a lone connect waits for nothing (group commit).
final class ConnectBatcher: Sendable {
    private typealias Waiter = CheckedContinuation<ConnectOutcome, any Error>
    private let store: any ClusterStore
    private let pending = Mutex<(plans: [(ConnectPlan, Waiter)], running: Bool)>(([], false))
    /// At most this many connects per transaction.
    let batchLimit = 256

    init(store: any ClusterStore) { self.store = store }

    func connect(_ plan: ConnectPlan) async throws -> ConnectOutcome {
        try await withCheckedThrowingContinuation { (waiter: Waiter) in
            let first = pending.withLock { state in
                state.plans.append((plan, waiter))
                defer { state.running = true }
                return !state.running
            }
            if first { Task { await self.drain() } }
        }
    }

    private func drain() async {
        while true {
            let batch = pending.withLock { state in
                let batch = Array(state.plans.prefix(batchLimit))
                state.plans.removeFirst(batch.count)
                if batch.isEmpty { state.running = false }
                return batch
            }
            if batch.isEmpty { return }
            do {
                let results = try await store.connect(batch.map(\.0))
                for ((_, waiter), result) in zip(batch, results) { waiter.resume(with: result) }
            } catch {
                for (_, waiter) in batch { waiter.resume(throwing: error) }
            }
        }
    }
}

/// What the controller counts, for /metrics.
final class ControllerCounters: Sendable {
    let connects = Atomic<Int>(0)
    let spawns = Atomic<Int>(0)
    let errors = Mutex<[String: Int]>([:])

    func failed(_ kind: ControllerError.Kind) {
        errors.withLock { $0[kind.rawValue, default: 0] += 1 }
    }
}
