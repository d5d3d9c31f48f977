import CShims
import Glibc
import HangarCore
import Logging
import Synchronization

/// One client connection, driven by its loop: request heads read and checked, each request
/// routed by its own token and carried to its backend through the drone's ingress, the
/// bodies and the response moved with splice, and after a 101 both directions spliced
/// until each side has ended. A second request with another token goes to its own
/// backend: an upstream connection is reused only for the same backend.
///
/// Every method runs on the loop's thread; `drive` is called on any event of either socket
/// and does what it can until each socket would block.
final class Relay: @unchecked Sendable {
    enum Phase: Equatable {
        /// Waiting for a request head.
        case head
        /// Waiting for the controller's answer about the request's token.
        case resolving
        /// The request and its response are being carried.
        case forwarding
        /// After a 101: bytes both ways until both sides have ended.
        case tunnel
        /// A reply of the proxy's own is being written; then the connection ends.
        case ending
        case closed
    }

    /// The drone's answer, then the response head, then its body.
    enum Response {
        case answer
        case head
        case body(BodyPump)
        case done
    }

    struct Upstream {
        var fd: Int32
        var backend: String
        /// The drone has said OK on this connection.
        var answered: Bool
    }

    /// Bytes the proxy wrote itself (a preface, a head, a reply), queued for one socket.
    struct Outbox {
        var bytes: [UInt8] = []
        var sent = 0

        var isEmpty: Bool { sent == bytes.count }

        /// Sends what it can, counting what went out: true once all is out, false when the
        /// socket would block; throws the errno of a failed send.
        mutating func flush(to fd: Int32, counting counter: ProxyMetrics.Counter, in metrics: ProxyMetrics) throws(Errno) -> Bool {
            while sent < bytes.count {
                let n = bytes.withUnsafeBufferPointer { hg_send(fd, $0.baseAddress! + sent, bytes.count - sent) }
                if n == -Int(EAGAIN) { return false }
                guard n > 0 else { throw Errno(Int32(-n)) }
                sent += n
                metrics.add(counter, n)
            }
            clear()
            return true
        }

        mutating func clear() {
            bytes.removeAll(keepingCapacity: true)
            sent = 0
        }
    }

    struct Errno: Error {
        var code: Int32
        init(_ code: Int32) { self.code = code }
    }

    let id: UInt64
    let client: Int32
    let peer: String
    unowned let loop: PumpLoop
    var core: ProxyCore { loop.core }
    var configuration: ProxyConfiguration { loop.core.configuration }

    var phase = Phase.head
    var deadline: ContinuousClock.Instant?
    /// Part of the current head has come.
    var headBegun = false

    var request: RequestHead?
    var target: RoutedTarget?
    /// The label in front of the cluster in the request's Host (nil: the cluster itself).
    var subdomain: String?
    var route: ProxyRoute?
    /// Counts route lookups, so that a late answer to an abandoned one is ignored.
    var lookups = 0
    var upstream: Upstream?
    /// In the loop's `again` list now.
    private var queuedAgain = false

    var toUpstream = Outbox()
    var toClient = Outbox()
    var requestBody: BodyPump?
    var requestSent = false
    var response = Response.head
    /// A response head of the backend has gone to the client: errors can no longer be replied.
    var responseBegun = false
    var backendKeepsAlive = true

    /// Client to backend, backend to client; made at first use, kept while they are empty.
    var up: Pipe?
    var down: Pipe?
    /// After a 101, each direction until its source ends (nil: ended).
    var tunnelUp: BodyPump?
    var tunnelDown: BodyPump?

    /// A reply of the proxy's own keeps the connection only for a request without a body
    /// or an upgrade (the body would be left unread).
    var canKeepAfterReply: Bool {
        guard let request else { return false }
        return request.keepAlive && request.body == .none && request.upgrade == nil
    }

    init(id: UInt64, client: Int32, peer: String, loop: PumpLoop) {
        self.id = id
        self.client = client
        self.peer = peer
        self.loop = loop
        loop.core.metrics.open.add(1, ordering: .relaxed)
        deadline = loop.now + loop.core.configuration.headTimeout
    }

    // MARK: driving

    func drive() {
        queuedAgain = false
        // Any event while a request is carried counts as activity (the drone's answer has
        // its own bound); a carried request silent for the idle timeout ends.
        if phase == .forwarding, upstream?.answered == true {
            deadline = loop.now + configuration.idleTimeout
        }
        var progress = true
        while progress {
            switch phase {
            case .head: progress = readHead()
            case .resolving: progress = false
            case .forwarding: progress = forward()
            case .tunnel: progress = tunnel()
            case .ending: progress = end()
            case .closed: progress = false
            }
        }
    }

    func checkDeadline(_ now: ContinuousClock.Instant) {
        guard let deadline, now >= deadline else { return }
        self.deadline = nil
        switch phase {
        case .head:
            if headBegun {
                reply(408, "the request head did not arrive in time", keepAlive: false)
            } else {
                return close()
            }
        case .resolving:
            reply(504, "the controller did not answer in time", keepAlive: false)
        case .forwarding:
            let waitingForDrone = if case .answer = response { true } else { false }
            dropUpstream()
            guard !responseBegun else { return close() }
            reply(504, waitingForDrone ? "the backend was not ready in time" : "the backend did not answer in time", keepAlive: false)
        case .ending, .tunnel, .closed:
            return close()
        }
        drive()
    }

    // MARK: the request head

    private func readHead() -> Bool {
        guard flushClient() else { return false }
        let scratch = loop.scratch
        let peeked = hg_peek(client, scratch, loop.scratchSize)
        if peeked == -Int(EAGAIN) { return false }
        if peeked <= 0 {
            close()
            return false
        }
        let bytes = UnsafeBufferPointer(start: scratch, count: peeked)
        let head: RequestHead
        do {
            guard let end = try HeadParser.end(of: bytes, limits: configuration.headLimits) else {
                if !headBegun {
                    headBegun = true
                    deadline = loop.now + configuration.headTimeout
                }
                return false
            }
            head = try HeadParser.request(bytes[0..<end], limits: configuration.headLimits)
            _ = hg_receive(client, scratch, end)
        } catch {
            reply(error.status, error.reason, keepAlive: false)
            return true
        }
        begin(head)
        return true
    }

    /// A new request: the proxy's own paths, the token, the Host, then the route.
    private func begin(_ head: RequestHead) {
        core.metrics.add(.requests)
        headBegun = false
        deadline = nil
        request = head
        route = nil
        let canKeep = canKeepAfterReply
        let path = head.target.prefix { $0 != "?" }
        if path == "/ready" {
            let ready = core.routes.isConnected
            return reply(ready ? 200 : 503, ready ? "ready" : "not connected to the controller", keepAlive: canKeep)
        }
        if path == "/" {
            if let redirect = configuration.rootRedirect {
                return reply(301, "", keepAlive: canKeep, location: redirect)
            }
            return reply(400, "no token in the path (expected /TOKEN/...)", keepAlive: canKeep)
        }
        guard let target = RoutedTarget(head.target) else {
            return reply(400, "no token in the path (expected /TOKEN/...)", keepAlive: canKeep)
        }
        guard let host = head.host else { return reply(400, "no Host field", keepAlive: canKeep) }
        guard let label = ClusterHost.subdomain(of: host, cluster: configuration.cluster.rawValue) else {
            return reply(403, "this Host is not served here", keepAlive: canKeep)
        }
        self.target = target
        subdomain = label
        lookups += 1
        let lookup = lookups
        let loop = self.loop
        let found = core.routes.lookup(target.token) { [self] answer in
            loop.post {
                self.routed(answer, lookup: lookup)
                self.drive()
            }
        }
        if let found {
            routed(found, lookup: lookup)
        } else {
            phase = .resolving
            deadline = loop.now + configuration.lookupTimeout
        }
    }

    /// The route of the request's token: checks, then the upstream connection and the head.
    /// Never drives (the caller does): an answer from the cache comes inside `drive`, and
    /// driving again from here would nest one call per pipelined request.
    private func routed(_ answer: RouteAnswer, lookup: Int) {
        guard lookup == lookups, phase == .head || phase == .resolving, let head = request, let target else { return }
        deadline = nil
        let canKeep = canKeepAfterReply
        let route: ProxyRoute
        switch answer {
        case .unavailable:
            return reply(503, "the proxy is not connected to the controller", keepAlive: canKeep)
        case .busy:
            return reply(503, "the proxy has too many route lookups in flight", keepAlive: canKeep)
        case .gone:
            return reply(
                410, "this token leads to no backend (unknown, expired or revoked, or its backend has ended)",
                keepAlive: canKeep)
        case .route(let found):
            route = found
        }
        if let wanted = route.subdomain, subdomain != wanted {
            return reply(403, "this backend is served only on its own subdomain", keepAlive: canKeep)
        }
        self.route = route
        guard connectUpstream(route), let upstream else { return }
        requestBody = nil
        if head.body != .none {
            guard let pipe = pipe(&up) else {
                dropUpstream()
                return reply(503, "the proxy is out of pipes", keepAlive: false)
            }
            requestBody = BodyPump(head.body, from: client, to: upstream.fd, pipe: pipe, refusingWith: 400, fromClient: true)
        }
        toUpstream.bytes += Messages.request(head, target: target, route: route, peer: peer, scheme: configuration.scheme)
        requestSent = false
        response = upstream.answered ? .head : .answer
        if case .answer = response { deadline = loop.now + configuration.readyTimeout }
        responseBegun = false
        phase = .forwarding
    }

    /// Reuses the connection to the same backend if it is still open; otherwise opens one
    /// to the drone's ingress and queues the preface.
    private func connectUpstream(_ route: ProxyRoute) -> Bool {
        if let current = upstream {
            var byte: UInt8 = 0
            if current.backend == route.backend_id, current.answered, hg_peek(current.fd, &byte, 1) == -Int(EAGAIN) {
                return true
            }
            dropUpstream()
        }
        guard let ingress = route.ingress.flatMap(IPv4Endpoint.init) else {
            reply(502, "the backend's drone has no IPv4 ingress address", keepAlive: false)
            return false
        }
        guard let backend = try? BackendID(route.backend_id) else {
            reply(502, "the controller gave a malformed backend id", keepAlive: false)
            return false
        }
        let fd = hg_connect_tcp4(ingress.address, ingress.port, 1)
        guard fd >= 0 else {
            reply(502, "the backend's drone is unreachable", keepAlive: false)
            return false
        }
        guard loop.watch(fd, side: PumpLoop.upstreamSide, of: id) else {
            Glibc.close(fd)
            reply(502, "the proxy could not watch a connection", keepAlive: false)
            return false
        }
        core.metrics.add(.upstreamConnections)
        upstream = Upstream(fd: fd, backend: route.backend_id, answered: false)
        toUpstream.bytes = Array(IngressPreface.make(backend: backend, secret: configuration.ingressSecret).utf8)
        return true
    }

    // MARK: carrying a request and its response

    private func forward() -> Bool {
        guard let upstream else { return false }
        var progress = false

        // The request: preface and head, then the body.
        if !toUpstream.isEmpty {
            do {
                progress = try toUpstream.flush(to: upstream.fd, counting: .bytesToBackends, in: core.metrics)
            } catch {
                return failUpstream("the backend's drone is unreachable")
            }
        }
        if toUpstream.isEmpty, !requestSent {
            if var body = requestBody {
                let outcome = run(&body, counting: .bytesToBackends)
                requestBody = body
                switch outcome {
                case .done:
                    requestBody = nil
                    requestSent = true
                    progress = true
                case .blocked: break
                case .more: again()
                case .cutShort:
                    close()
                    return false
                case .failed: return failUpstream("the backend stopped reading the request")
                case .malformed(let error):
                    dropUpstream()
                    reply(error.status, error.reason, keepAlive: false)
                    return true
                }
            } else {
                requestSent = true
                progress = true
            }
        }

        // The response: the drone's answer, the head, the body.
        guard flushClient() else { return progress }
        switch response {
        case .answer:
            let scratch = loop.scratch
            let peeked = hg_peek(upstream.fd, scratch, 64)
            if peeked == -Int(EAGAIN) { return progress }
            if peeked <= 0 { return failUpstream("the backend's drone closed the connection") }
            let bytes = UnsafeBufferPointer(start: scratch, count: peeked)
            guard let newline = bytes.firstIndex(of: 10) else {
                return peeked < 64 ? progress : failUpstream("the drone's answer is malformed")
            }
            switch IngressPreface.answer(bytes[0..<newline]) {
            case .some(nil):
                _ = hg_receive(upstream.fd, scratch, newline + 1)
                self.upstream?.answered = true
                deadline = nil
                response = .head
                return true
            case .some(.some(let refusal)):
                dropUpstream()
                // Not ready in time: 504; ended (before the controller said so): the token
                // leads nowhere now, 410; otherwise the backend cannot be reached, 502.
                let status = refusal == .notReady ? 504 : refusal == .ended ? 410 : 502
                reply(status, "the backend: \(refusal.rawValue)", keepAlive: false)
                return true
            case .none:
                return failUpstream("the drone's answer is malformed")
            }
        case .head:
            let scratch = loop.scratch
            let peeked = hg_peek(upstream.fd, scratch, loop.scratchSize)
            if peeked == -Int(EAGAIN) { return progress }
            if peeked <= 0 { return failUpstream("the backend closed the connection without a response") }
            let bytes = UnsafeBufferPointer(start: scratch, count: peeked)
            let head: ResponseHead
            do {
                guard let end = try? HeadParser.end(of: bytes, limits: configuration.headLimits) else {
                    return peeked >= configuration.headLimits.maxBytes
                        ? failUpstream("the backend's response head is over \(configuration.headLimits.maxBytes) bytes")
                        : progress
                }
                head = try HeadParser.response(bytes[0..<end], method: request?.method ?? "GET", limits: configuration.headLimits)
                _ = hg_receive(upstream.fd, scratch, end)
            } catch {
                return failUpstream(error.reason)
            }
            return respond(head, upstream: upstream)
        case .body(var pump):
            let outcome = run(&pump, counting: .bytesToClients)
            response = .body(pump)
            switch outcome {
            case .done:
                response = .done
                return true
            case .blocked: return progress
            case .more:
                again()
                return progress
            case .cutShort, .failed, .malformed:
                close()
                return false
            }
        case .done:
            guard requestSent else {
                // The backend answered before reading the whole request and will close:
                // the rest of the request goes nowhere, and the answer must reach the client.
                guard backendKeepsAlive else {
                    dropUpstream()
                    phase = .ending
                    return true
                }
                return progress
            }
            return finish()
        }
    }

    /// A response head from the backend: passed on, rewritten; then its body or a tunnel.
    private func respond(_ head: ResponseHead, upstream: Upstream) -> Bool {
        guard let request else { return false }
        if head.status == 101 {
            guard request.upgrade != nil, requestSent else {
                return failUpstream("the backend switched protocols without being asked to")
            }
            toClient.bytes += Messages.response(head, backend: upstream.backend, keepAlive: true, upgrade: true)
            responseBegun = true
            return startTunnel()
        }
        if head.status < 200 {
            toClient.bytes += Messages.response(head, backend: upstream.backend, keepAlive: true, upgrade: false)
            return true
        }
        backendKeepsAlive = head.keepAlive
        let keep = request.keepAlive && head.keepAlive
        toClient.bytes += Messages.response(head, backend: upstream.backend, keepAlive: keep, upgrade: false)
        responseBegun = true
        guard head.body != .none else {
            response = .done
            return true
        }
        guard let pipe = pipe(&down) else { return failUpstream("the proxy has no pipes left") }
        response = .body(BodyPump(head.body, from: upstream.fd, to: client, pipe: pipe, refusingWith: 502))
        return true
    }

    /// Both the request and its response have been carried: the next request, or the end.
    private func finish() -> Bool {
        guard let request else { return false }
        route = nil
        self.request = nil
        target = nil
        phase = request.keepAlive && backendKeepsAlive ? .head : .ending
        if phase == .head { deadline = loop.now + configuration.idleTimeout }
        if !backendKeepsAlive { dropUpstream() }
        return true
    }

    /// The upstream failed: a 502 if nothing of the response has gone out; the end once the
    /// response that did go out is delivered; else the end at once.
    private func failUpstream(_ reason: String) -> Bool {
        dropUpstream()
        if case .done = response, phase == .forwarding {
            phase = .ending
            return true
        }
        if responseBegun {
            close()
            return false
        }
        reply(502, reason, keepAlive: false)
        return true
    }

    // MARK: after a 101

    private func startTunnel() -> Bool {
        guard let upstream, let upPipe = pipe(&up), let downPipe = pipe(&down) else {
            close()
            return false
        }
        core.metrics.add(.tunnels)
        tunnelUp = BodyPump(.untilClose, from: client, to: upstream.fd, pipe: upPipe, refusingWith: 400)
        tunnelDown = BodyPump(.untilClose, from: upstream.fd, to: client, pipe: downPipe, refusingWith: 502)
        // Dead peers of a quiet tunnel are found by TCP keepalive, not by a timeout.
        hg_keepalive(client, 60, 10, 6)
        hg_keepalive(upstream.fd, 60, 10, 6)
        phase = .tunnel
        deadline = nil
        return true
    }

    private func tunnel() -> Bool {
        guard flushClient(), runTunnel(&tunnelUp, counting: .bytesToBackends),
            runTunnel(&tunnelDown, counting: .bytesToClients)
        else { return false }
        if tunnelUp == nil && tunnelDown == nil {
            close()
            return false
        }
        // One side has ended: the other has the idle timeout to end too.
        if (tunnelUp == nil || tunnelDown == nil) && deadline == nil { deadline = loop.now + configuration.idleTimeout }
        return false
    }

    /// One direction of a tunnel: false once the relay is closed.
    private func runTunnel(_ direction: inout BodyPump?, counting counter: ProxyMetrics.Counter) -> Bool {
        guard var pump = direction else { return true }
        switch run(&pump, counting: counter) {
        case .done:
            // Its source ended: the half-close is passed on, the other side may still answer.
            _ = hg_shutdown_write(pump.flow.to)
            direction = nil
            return true
        case .blocked: break
        case .more: again()
        case .cutShort, .failed, .malformed:
            close()
            return false
        }
        direction = pump
        return true
    }

    /// Has the loop drive it again after this turn's events (once, however often asked).
    private func again() {
        guard !queuedAgain else { return }
        queuedAgain = true
        loop.again.append(self)
    }

    /// Runs a pump, counting what it moved as it moves (a long stream shows in the metrics
    /// while it lasts).
    private func run(_ pump: inout BodyPump, counting counter: ProxyMetrics.Counter) -> BodyPump.Outcome {
        let before = pump.moved
        let outcome = pump.run(scratch: loop.scratch)
        if pump.moved != before { core.metrics.add(counter, Int(pump.moved - before)) }
        return outcome
    }

    // MARK: replies of the proxy's own

    /// Answers the request itself. With `keepAlive` the connection then waits for the next
    /// request; else it ends once the reply is out.
    func reply(_ status: Int, _ text: String, keepAlive: Bool, location: String? = nil) {
        core.metrics.answered(status)
        // A 502 or 504 says a backend or its drone failed: a notice, within the budget (a
        // hostile backend can fail every request; the metrics count each one). The rest
        // answer the client's own request: debug.
        let failed = status == 502 || status == 504
        if failed || core.logger.logLevel <= .debug {
            var metadata: Logger.Metadata = ["status": "\(status)"]
            if let route { metadata["backend.id"] = "\(route.backend_id)" }
            if let request { metadata["method"] = "\(request.method)" }
            if !failed {
                core.logger.debug("\(text)", metadata: metadata)
            } else if let dropped = core.noticeBudget.take() {
                if dropped > 0 { metadata["suppressed"] = "\(dropped)" }
                core.logger.notice("\(text)", metadata: metadata)
            }
        }
        toClient.bytes += Messages.reply(status, text, keepAlive: keepAlive, location: location)
        request = nil
        target = nil
        route = nil
        headBegun = false
        if keepAlive {
            phase = .head
            deadline = loop.now + configuration.idleTimeout
        } else {
            phase = .ending
            // Bounded: a client that does not read its reply does not hold the connection.
            deadline = loop.now + .seconds(2)
        }
    }

    /// Writes what is queued for the client; true once all of it is out (a failed send ends
    /// the connection).
    private func flushClient() -> Bool {
        do {
            return try toClient.flush(to: client, counting: .bytesToClients, in: core.metrics)
        } catch {
            close()
            return false
        }
    }

    /// The reply is out: shut the write side, let the client read it, then close (an
    /// immediate close with unread request bytes would reset the connection and could
    /// destroy the reply in flight).
    private func end() -> Bool {
        guard flushClient() else { return false }
        if deadline == nil { deadline = loop.now + .seconds(2) }
        _ = hg_shutdown_write(client)
        while true {
            let read = hg_receive(client, loop.scratch, loop.scratchSize)
            if read == -Int(EAGAIN) { return false }
            if read <= 0 { break }
        }
        close()
        return false
    }

    // MARK: resources

    /// The pipe in `slot`, made now if there is none.
    private func pipe(_ slot: inout Pipe?) -> Pipe? {
        if slot == nil {
            slot = Pipe(size: configuration.pipeSize)
            // Smaller than asked: over fs.pipe-max-size, or past the user's
            // fs.pipe-user-pages-soft without CAP_SYS_RESOURCE. It works, more slowly.
            if let made = slot, made.capacity < configuration.pipeSize { core.metrics.add(.smallPipes) }
        }
        return slot
    }

    /// Closes the upstream connection. Mid-exchange (forwarding, tunnel) the pipes may hold
    /// its bytes and are closed too; between requests they are empty and kept.
    func dropUpstream() {
        guard let current = upstream else { return }
        Glibc.close(current.fd)
        upstream = nil
        toUpstream.clear()
        guard phase == .forwarding || phase == .tunnel || phase == .closed else { return }
        up?.close()
        down?.close()
        up = nil
        down = nil
    }

    /// A revocation: the connection ends if it carries what it names; an idle kept-alive
    /// upstream to an ended backend is dropped.
    func revoke(_ revocation: Revocation) {
        if carries(revocation) { return close() }
        if phase == .head, let upstream, revocation.backends.contains(upstream.backend) { dropUpstream() }
    }

    /// Is this relay carrying something a revocation names?
    func carries(_ revocation: Revocation) -> Bool {
        guard phase == .forwarding || phase == .tunnel, let route else { return false }
        return revocation.backends.contains(route.backend_id) || revocation.grants.contains(route.grant)
            || (target.map { revocation.tokens.contains($0.token) } ?? false)
    }

    func close() {
        guard phase != .closed else { return }
        phase = .closed
        dropUpstream()
        // Kept pipes (no upstream now) are closed with the connection.
        up?.close()
        down?.close()
        up = nil
        down = nil
        Glibc.close(client)
        core.metrics.open.subtract(1, ordering: .relaxed)
        loop.forget(self)
    }
}
