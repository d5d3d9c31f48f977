import HangarCore
import HangarStore
import HummingbirdWebSocket
import Logging
import Synchronization

/// The proxies connected to this controller: they ask for routes and hear of revocations.
/// A route and a revocation reach a proxy in the order they happened: a route resolved
/// while a revocation went out is resolved again, so no proxy caches a revoked route.
final class ProxyHub: Sendable {
    private struct State {
        var sessions: [Int: AsyncStream<ProxyMessage>.Continuation] = [:]
        var nextID = 0
        /// Revocations sent so far.
        var revocations = 0
    }

    private let state = Mutex(State())

    func attach(_ outbox: AsyncStream<ProxyMessage>.Continuation) -> Int {
        state.withLock { state in
            state.nextID += 1
            state.sessions[state.nextID] = outbox
            return state.nextID
        }
    }

    func detach(_ id: Int) {
        _ = state.withLock { $0.sessions.removeValue(forKey: id) }
    }

    /// Tells every proxy of a revocation.
    func broadcast(_ message: ProxyMessage) {
        state.withLock { state in
            state.revocations += 1
            for outbox in state.sessions.values { outbox.yield(message) }
        }
    }

    /// Revocations sent so far (read before resolving a route).
    var revocations: Int { state.withLock { $0.revocations } }

    /// Queues a route for its proxy unless a revocation went out since `revocations` was
    /// read; false: resolve it again.
    func answer(_ message: ProxyMessage, to outbox: AsyncStream<ProxyMessage>.Continuation, ifNoRevocationSince seen: Int)
        -> Bool
    {
        state.withLock { state in
            guard state.revocations == seen else { return false }
            outbox.yield(message)
            return true
        }
    }

    var count: Int { state.withLock { $0.sessions.count } }
}

extension Controller {
    /// One proxy's session (a proxy of `cluster`): route requests answered from the store;
    /// revocations pushed.
    func serveProxy(cluster: ClusterName, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async {
        let (outbox, continuation) = AsyncStream<ProxyMessage>.makeStream()
        let session = proxies.attach(continuation)
        defer { proxies.detach(session) }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await message in outbox {
                    guard (try? await outbound.write(.text(Self.text(message)))) != nil else { break }
                }
            }
            do {
                for try await frame in inbound.messages(maxSize: 64 * 1024) {
                    guard case .routeRequest(let token) = try? Self.decode(frame) as ProxyMessage else { continue }
                    while true {
                        let seen = proxies.revocations
                        let found: ProxyRoute?
                        do {
                            found = try await route(token, cluster: cluster)
                        } catch {
                            // One failed lookup is one unresolved token, not the session's end.
                            logger.error("a route lookup failed", metadata: ["error": "\(error)"])
                            found = nil
                        }
                        if proxies.answer(.route(token: token, route: found), to: continuation, ifNoRevocationSince: seen) {
                            break
                        }
                    }
                }
            } catch {
                logger.info("proxy session ended", metadata: ["error": "\(error)"])
            }
            continuation.finish()
            await group.waitForAll()
        }
    }

    /// The grant a token names and when the token expires (nil: a static token), unless it
    /// is not this controller's, has expired or was revoked, or its grant is gone.
    func grant(of token: String, signer: TokenSigner) async throws -> (AccessGrant, expiresAt: Int64?)? {
        if token.hasPrefix("s.") {
            guard token.utf8.count <= 64, let grant = try await store.grant(staticToken: token) else { return nil }
            return (grant, nil)
        }
        guard let (id, expiry) = signer.verify(token), expiry > wallClockMilliseconds(), try await !store.isRevoked(token),
            let grant = try await store.grant(id)
        else { return nil }
        return (grant, expiry)
    }

    /// Where a token leads: a live backend of `cluster`, its drone's ingress, and who
    /// connects. Nil for a token this controller did not sign (or a static token it does
    /// not know), one that has expired or was revoked, one whose grant or backend is gone,
    /// or one of another cluster's backend.
    func route(_ token: String, cluster: ClusterName) async throws -> ProxyRoute? {
        let signer = try await tokenSigner()
        guard let (grant, expiresAt) = try await grant(of: token, signer: signer),
            let backend = try await store.backend(grant.backend), backend.status < .terminated,
            backend.cluster == cluster
        else { return nil }
        let ingress = try await store.drone(backend.drone)?.registration.ingress
        return ProxyRoute(
            backend_id: backend.id.rawValue, grant: grant.id, expires_at: expiresAt, subdomain: backend.subdomain,
            drone: backend.drone.rawValue, ingress: ingress, status: backend.status.description, user: grant.user,
            auth: grant.auth, secret_token: signer.secret(for: token))
    }
}
