import Logging

/// The WebSocket URL of one of a controller's sockets ("drone-socket", "proxy-socket"):
/// ws(s) for an http(s) base URL, then `/ctrl/c/CLUSTER/SOCKET`.
public func controllerSocketURL(_ base: String, cluster: ClusterName, socket: String) -> String {
    var url = base
    if url.hasPrefix("https://") {
        url = "wss://" + url.dropFirst(8)
    } else if url.hasPrefix("http://") {
        url = "ws://" + url.dropFirst(7)
    }
    while url.hasSuffix("/") { url.removeLast() }
    return url + "/ctrl/c/\(cluster)/\(socket)"
}

/// Runs `session` (a connection to the controller at `url`) again each time it ends,
/// until the task is cancelled: the first retry after `minimum`, doubling up to `maximum`,
/// each wait with jitter (half to all of it); a session that lasted 10 s starts the waits
/// over. A session that fails is logged, unless it failed because the task was cancelled.
public func reconnecting(
    to url: String, minimum: Duration, maximum: Duration, logger: Logger, _ session: () async throws -> Void
) async {
    var delay = minimum
    while !Task.isCancelled {
        let started = ContinuousClock.now
        do {
            try await session()
        } catch where !Task.isCancelled {
            logger.info("the controller is out of reach", metadata: ["error": "\(error)", "controller.url": "\(url)"])
        } catch {
            // Shutting down: not worth a line.
        }
        if ContinuousClock.now - started > .seconds(10) { delay = minimum }
        try? await Task.sleep(for: delay * Double.random(in: 0.5...1.0))
        delay = min(delay * 2, maximum)
    }
}
