import ArgumentParser
import Glibc
import Hummingbird
import Logging
import ServiceLifecycle

/// `--metrics host:port`: an HTTP listener that answers GET /metrics (Prometheus text) and
/// nothing else; none without an address. The drone's admin API is a unix socket and the
/// proxy's port is public, so each takes its own scrape address; the controller serves
/// /metrics on its API.
func metricsListener(
    _ address: String?, option: String, logger: Logger, render: @escaping @Sendable () async -> String
) throws -> [any Service] {
    guard let address else { return [] }
    let (host, port) = try parseAddress(address, option: option)
    let router = Router()
    router.get("/metrics") { _, _ in await render() }
    return [Application(
        router: router, configuration: .init(address: .hostname(host, port: port), serverName: "hangar-metrics"),
        onServerRunning: { channel in
            let bound = channel.localAddress?.port ?? port
            let line = "hangar: metrics on http://\(host):\(bound)/metrics\n"
            _ = line.utf8CString.withUnsafeBufferPointer { write(1, $0.baseAddress, $0.count - 1) }
        },
        logger: logger)]
}
