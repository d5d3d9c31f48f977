import HangarCore
import Synchronization

/// What a lookup found.
public enum RouteAnswer: Sendable, Equatable {
    case route(ProxyRoute)
    /// The controller knows no live route for the token (unknown, expired, revoked, or its
    /// backend has ended).
    case gone
    /// The controller is out of reach.
    case unavailable
    /// Too many lookups are in flight already.
    case busy
}

/// Routes by token, as the controller gave them, dropped the moment the controller says
/// a token, grant or backend is revoked or ended, when a token expires, and all of them
/// whenever the link to the controller is lost (revocations may have been missed). Unknown
/// tokens are remembered for a short while, so that a flood of bad tokens does not become
/// a flood of lookups.
public final class RouteCache: Sendable {
    struct Entry {
        var route: ProxyRoute?
        /// Monotonic deadline for a negative entry.
        var until: ContinuousClock.Instant?
    }

    struct State {
        var entries: [String: Entry] = [:]
        /// How many of `entries` are negative (the gauges without a walk of the cache).
        var negatives = 0
        /// Lookups in flight: when each was asked, and who waits for it.
        var waiting: [String: (asked: ContinuousClock.Instant, callbacks: [@Sendable (RouteAnswer) -> Void])] = [:]
        var connected = false
        /// Routes set by hand (`pin`), answered with or without a controller.
        var pinned: [String: ProxyRoute] = [:]
        /// Tokens to ask the controller for.
        var outbox: AsyncStream<String>.Continuation?
    }

    let state = Mutex(State())
    let capacity: Int
    let negativeFor: Duration
    /// A lookup unanswered this long is asked again (its answer may have been lost).
    let askAgainAfter: Duration

    public init(capacity: Int = 200_000, negativeFor: Duration = .seconds(10), askAgainAfter: Duration = .seconds(5)) {
        self.capacity = capacity
        self.negativeFor = negativeFor
        self.askAgainAfter = askAgainAfter
    }

    /// Routes cached, tokens remembered as unknown, lookups in flight, and whether the
    /// controller is connected: the proxy's gauges, read without walking the cache.
    public var gauges: (routes: Int, unknown: Int, lookups: Int, connected: Bool) {
        state.withLock { state in
            (state.entries.count - state.negatives, state.negatives, state.waiting.count, state.connected)
        }
    }

    /// Answers from the cache at once (true), or asks the controller and calls `answer`
    /// later on the link's thread (false).
    public func lookup(_ token: String, answer: @escaping @Sendable (RouteAnswer) -> Void) -> RouteAnswer? {
        let now = ContinuousClock.now
        let wall = wallClockMilliseconds()
        return state.withLock { state -> RouteAnswer? in
            if let route = state.pinned[token] { return .route(route) }
            guard state.connected, let outbox = state.outbox else { return .unavailable }
            if let entry = state.entries[token] {
                if let route = entry.route {
                    if let expiry = route.expires_at, expiry <= wall {
                        state.entries[token] = nil
                        return .gone
                    }
                    return .route(route)
                }
                if let until = entry.until, until > now { return .gone }
                state.entries[token] = nil
                state.negatives -= 1
            }
            if var pending = state.waiting[token] {
                pending.callbacks.append(answer)
                if now - pending.asked > askAgainAfter {
                    pending.asked = now
                    outbox.yield(token)
                }
                state.waiting[token] = pending
            } else {
                guard state.waiting.count < capacity else { return .busy }
                state.waiting[token] = (now, [answer])
                outbox.yield(token)
            }
            return nil
        }
    }

    /// The controller's answer for a token.
    func resolved(_ token: String, _ route: ProxyRoute?) {
        let waiting = state.withLock { state -> [@Sendable (RouteAnswer) -> Void] in
            guard let waiting = state.waiting.removeValue(forKey: token)?.callbacks else { return [] }
            if state.entries.count >= capacity {
                state.entries.removeAll(keepingCapacity: true)
                state.negatives = 0
            }
            let replaced = state.entries.updateValue(Entry(route: route, until: route == nil ? .now + negativeFor : nil), forKey: token)
            if let replaced, replaced.route == nil { state.negatives -= 1 }
            if route == nil { state.negatives += 1 }
            return waiting
        }
        let answer: RouteAnswer = route.map { .route($0) } ?? .gone
        for callback in waiting { callback(answer) }
    }

    /// Drops what a revocation names.
    func revoke(_ revocation: Revocation) {
        let tokens = Set(revocation.tokens)
        let grants = Set(revocation.grants)
        let backends = Set(revocation.backends)
        state.withLock { state in
            state.entries = state.entries.filter { token, entry in
                guard let route = entry.route else { return true }
                return !tokens.contains(token) && !grants.contains(route.grant) && !backends.contains(route.backend_id)
            }
        }
    }

    /// The link is up (with where to send lookups) or down: either way the cache starts
    /// empty, and lookups in flight while it went down are answered `unavailable`.
    func linked(_ outbox: AsyncStream<String>.Continuation?) {
        let orphaned = state.withLock { state -> [@Sendable (RouteAnswer) -> Void] in
            state.entries.removeAll()
            state.negatives = 0
            state.connected = outbox != nil
            state.outbox = outbox
            let orphaned = state.waiting.values.flatMap(\.callbacks)
            state.waiting.removeAll()
            return orphaned
        }
        for callback in orphaned { callback(.unavailable) }
    }

    /// Routes `token` to `route` without asking a controller, until the process ends: for
    /// measuring the proxy alone (`hangar bench proxy`), never set by the controller.
    public func pin(_ token: String, to route: ProxyRoute) {
        state.withLock { $0.pinned[token] = route }
    }

    /// Connected to the controller now (`GET /ready`).
    public var isConnected: Bool { state.withLock { $0.connected } }

    /// Routes held now (tests, metrics).
    public var count: Int { state.withLock { $0.entries.count } }
}
