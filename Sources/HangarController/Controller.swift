import HangarCore
import HangarPolicy
import HangarStore
import Logging
import Synchronization

/// The controller's settings, loaded once at the edge (flags, environment).
public struct ControllerConfiguration: Sendable {
    /// Connects that name no cluster go to this one. A cluster is named after the public
    /// address of its proxies ("localhost:9090").
    public var defaultCluster: ClusterName
    /// /ctrl routes (and the drone socket) need `Authorization: Bearer <token>`; nil:
    /// none (or `forwardAuth`).
    public var token: String?
    /// Instead of (or besides) `token`: a URL asked with the request's Authorization and
    /// Cookie headers; a 2xx answer lets the request through (Plane's forward auth).
    public var forwardAuth: String?
    /// The scheme of backend URLs (the proxies' scheme).
    public var proxyScheme = "http"
    /// Where clients reach this controller, for status URLs ("http://127.0.0.1:8080");
    /// nil: the Host the request came to.
    public var publicURL: String?
    /// A renewal holds a drone's keys this long.
    public var leaseSeconds = 30
    /// How often drones send a heartbeat.
    public var heartbeatInterval: Duration = .seconds(2)
    /// A drone whose last heartbeat is older than this gets no new backends.
    public var heartbeatFreshness: Duration = .seconds(6)
    /// A drone silent this long has lost its backends: they are recorded as terminated
    /// (reason lost) and their keys freed. At least `leaseSeconds`, so that a drone that
    /// stopped renewing has ended them itself (it does so at 5/6 of a lease).
    public var lostAfter: Duration = .seconds(30)
    /// How long a connection token resolves (a static token: as long as its backend lives).
    public var tokenLifetime: Duration = .seconds(3600)
    /// A connect whose key's backend is terminating waits this long for it to end.
    public var terminatingWait: Duration = .seconds(30)
    /// Larger request bodies are refused (413).
    public var maxBodyBytes = 64 * 1024
    /// How often lost drones and expired leases are swept.
    public var sweepInterval: Duration = .seconds(1)
    /// Image policies, to check an executable (its image and limits) at the connect and to
    /// know its memory for scheduling; nil: the drone checks, and a backend's memory is
    /// what the connect asks for.
    public var policies: PolicyLoader?

    public init(defaultCluster: ClusterName, publicURL: String? = nil) {
        self.defaultCluster = defaultCluster
        self.publicURL = publicURL
    }

    /// Refuses settings that contradict each other.
    public func validate() throws(ControllerError) {
        guard (3...86_400).contains(leaseSeconds) else {
            throw .badRequest("lease: at least 3 seconds and at most 86400, got \(leaseSeconds)")
        }
        guard lostAfter >= .seconds(leaseSeconds), lostAfter <= .seconds(7 * 86_400) else {
            throw .badRequest("lost-after (\(lostAfter)) must be at least the lease (\(leaseSeconds) s) and at most 7 days")
        }
        guard heartbeatInterval >= .milliseconds(50), heartbeatInterval * 3 <= .seconds(leaseSeconds) else {
            throw .badRequest(
                "heartbeat (\(heartbeatInterval)) must be at least 50 ms and at most a third of the lease (\(leaseSeconds) s)")
        }
        guard heartbeatFreshness >= heartbeatInterval, heartbeatFreshness <= .seconds(leaseSeconds) else {
            throw .badRequest(
                "heartbeat-freshness (\(heartbeatFreshness)) must be at least the heartbeat (\(heartbeatInterval)) and at most the lease")
        }
        guard tokenLifetime >= .seconds(1), tokenLifetime <= .seconds(365 * 86_400) else {
            throw .badRequest("token-lifetime (\(tokenLifetime)) must be 1 second to 365 days")
        }
        for (option, url) in [("public-url", publicURL), ("forward-auth", forwardAuth)] {
            if let url, !isHTTPURL(url) || url.utf8.count > 2048 {
                throw .badRequest("\(option): an http:// or https:// URL, got \"\(url.prefix(64))\"")
            }
        }
        guard token == nil || token!.utf8.count >= 16 else { throw .badRequest("token: at least 16 bytes") }
    }
}

/// An error of the controller's API, mapped to HTTP once, at the edge, as `{id, kind,
/// message}`. Kinds are Plane's where Plane has one.
public struct ControllerError: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case badRequest = "BadRequest"
        case payloadTooLarge = "PayloadTooLarge"
        case unauthorized = "Unauthorized"
        case notFound = "NotFound"
        case keyHeld = "KeyHeld"
        case keyUnheldNoSpawnConfig = "KeyUnheldNoSpawnConfig"
        case backendIDTaken = "BackendIdTaken"
        case keyTerminating = "KeyTerminating"
        case noDroneAvailable = "NoDroneAvailable"
        case internalError = "Internal"
    }

    public let id: String
    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        id = APIErrorBody.newID()
        self.kind = kind
        self.message = message
    }

    static func badRequest(_ message: String) -> ControllerError { ControllerError(.badRequest, message) }

    /// The HTTP status code.
    public var statusCode: Int {
        switch kind {
        case .badRequest: 400
        case .unauthorized: 401
        case .notFound: 404
        case .keyHeld, .keyUnheldNoSpawnConfig, .backendIDTaken: 409
        case .payloadTooLarge: 413
        case .internalError: 500
        case .keyTerminating, .noDroneAvailable: 503
        }
    }

    public var body: APIErrorBody { APIErrorBody(id: id, kind: kind.rawValue, message: message) }
    public var description: String { "\(kind.rawValue): \(message)" }
}

/// The controller: decides where backends run and keeps the truth about them in its store.
/// The HTTP API (`ControllerAPI`) and the drone socket (`DroneHub`) call into it.
public final class Controller: Sendable {
    public let configuration: ControllerConfiguration
    let store: any ClusterStore
    let logger: Logger
    let feed = StatusFeed()
    let drones = DroneHub()
    let proxies = ProxyHub()
    let batcher: ConnectBatcher
    let counters = ControllerCounters()
    private let signer = Mutex<TokenSigner?>(nil)

    public init(configuration: ControllerConfiguration, store: any ClusterStore, logger: Logger) {
        self.configuration = configuration
        self.store = store
        self.logger = logger
        batcher = ConnectBatcher(store: store)
    }

    /// Runs the sweeps (lost drones, expired leases, revocations of expired tokens) until
    /// cancelled.
    public func sweep() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.sweepInterval)
            do {
                let lost = try await store.markLost(silentFor: configuration.lostAfter.milliseconds)
                announce(lost + (try await store.expireLeases()))
                // Revocations of tokens that have expired since go, a bounded number per sweep.
                _ = try await store.deleteExpiredRevocations(limit: 10_000)
                if !lost.isEmpty {
                    logger.info("backends of silent drones recorded as lost", metadata: ["backends.count": "\(lost.count)"])
                }
            } catch is CancellationError {
                return  // shutting down
            } catch {
                logger.error("sweep failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Runs store work for an API call: a `ControllerError` passes as it is; any other
    /// error is the store's, an internal error (logged with its id at the edge).
    func withStore<T>(_ body: () async throws -> T) async throws(ControllerError) -> T {
        do {
            return try await body()
        } catch let error as ControllerError {
            throw error
        } catch {
            throw ControllerError(.internalError, "the store failed: \(error)")
        }
    }

    /// Recorded status events: their followers hear of them, and every proxy drops the
    /// routes of the backends that ended (one message for all; the store deleted their grants).
    func announce(_ events: [StatusEvent]) {
        for event in events { feed.publish(event) }
        let ended = events.filter { $0.status == .terminated }.map(\.backend.rawValue)
        if !ended.isEmpty { proxies.broadcast(.revoked(Revocation(backends: ended))) }
    }

    /// What signs connection tokens, with the store's key (read once).
    func tokenSigner() async throws(ControllerError) -> TokenSigner {
        if let signer = signer.withLock({ $0 }) { return signer }
        let key = try await withStore { try await store.tokenKey() }
        return signer.withLock { signer in
            if signer == nil { signer = TokenSigner(key: key) }
            return signer!
        }
    }
}

import ServiceLifecycle

/// The controller's sweeps as a service: lost drones, expired leases, revocations of
/// expired tokens.
public struct ControllerSweeps: Service {
    let controller: Controller

    public init(_ controller: Controller) { self.controller = controller }

    public func run() async throws {
        await cancelWhenGracefulShutdown { await controller.sweep() }
    }
}
