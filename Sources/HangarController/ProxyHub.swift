import HangarCore
import HangarStore
import HummingbirdWebSocket
import Logging
import Synchronization

/// The proxies connected to this controller: they ask for routes and hear of revoked tokens.
final class ProxyHub: Sendable {
    private let sessions = Mutex<[Int: AsyncStream<ProxyMessage>.Continuation]>([:])
    private let nextID = Atomic<Int>(0)

    func attach(_ outbox: AsyncStream<ProxyMessage>.Continuation) -> Int {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).newValue
        sessions.withLock { $0[id] = outbox }
        return id
    }

    func detach(_ id: Int) {
        _ = sessions.withLock { $0.removeValue(forKey: id) }
    }

    func broadcast(_ message: ProxyMessage) {
        for outbox in sessions.withLock({ Array($0.values) }) { outbox.yield(message) }
    }

    var count: Int { sessions.withLock { $0.count } }
}

extension Controller {
    /// One proxy's session: route requests answered from the store; revocations pushed.
    func serveProxy(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async {
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
                    continuation.yield(.route(token: token, route: try await route(token)))
                }
            } catch {
                logger.info("proxy session ended", metadata: ["error": "\(error)"])
            }
            continuation.finish()
            await group.waitForAll()
        }
    }

    /// Where a token leads: a live backend, its drone's ingress, and who connects. Nil for
    /// a token this controller did not sign (or a static token it does not know), one that
    /// has expired or was revoked, or one whose grant or backend is gone.
    func route(_ token: String) async throws -> ProxyRoute? {
        let signer = try await tokenSigner()
        let grant: AccessGrant
        var expiresAt: Int64?
        if token.hasPrefix("s.") {
            guard token.utf8.count <= 64, let found = try await store.grant(staticToken: token) else { return nil }
            grant = found
        } else {
            guard let (id, expiry) = signer.verify(token), expiry > wallClockMilliseconds(),
                try await !store.isRevoked(token), let found = try await store.grant(id)
            else { return nil }
            grant = found
            expiresAt = expiry
        }
        guard let backend = try await store.backend(grant.backend), backend.status < .terminated else { return nil }
        let ingress = try await store.drone(backend.drone)?.registration.ingress
        return ProxyRoute(
            backend_id: backend.id.rawValue, grant: grant.id, expires_at: expiresAt, subdomain: backend.subdomain,
            drone: backend.drone.rawValue, ingress: ingress, status: backend.status.description, user: grant.user,
            auth: grant.auth, secret_token: signer.secret(for: token))
    }
}
