import HangarCore
import HangarSandbox
import Synchronization

/// Counters a drone keeps, rendered in Prometheus' text format.
final class DroneCounters: Sendable {
    /// Upper bounds of the spawn-to-ready histogram, in seconds.
    static let buckets: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

    private struct State {
        var spawns = 0
        var failures = 0
        var readyCounts = [Int](repeating: 0, count: DroneCounters.buckets.count)
        var readyCount = 0
        var readySum = 0.0
    }

    private let state = Mutex(State())

    func spawned() { state.withLock { $0.spawns += 1 } }
    func failed() { state.withLock { $0.failures += 1 } }

    func ready(after duration: Duration) {
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        state.withLock { state in
            for (index, bound) in Self.buckets.enumerated() where seconds <= bound { state.readyCounts[index] += 1 }
            state.readyCount += 1
            state.readySum += seconds
        }
    }

    func render(into out: inout [String]) {
        let state = state.withLock { $0 }
        out += [
            "# HELP hangar_spawns_total Backends this drone was asked to spawn.", "# TYPE hangar_spawns_total counter",
            "hangar_spawns_total \(state.spawns)",
            "# HELP hangar_spawn_failures_total Spawns that failed (setup, image, policy).",
            "# TYPE hangar_spawn_failures_total counter", "hangar_spawn_failures_total \(state.failures)",
            "# HELP hangar_spawn_ready_seconds From the spawn request to ready.",
            "# TYPE hangar_spawn_ready_seconds histogram",
        ]
        for (index, bound) in Self.buckets.enumerated() {
            out.append("hangar_spawn_ready_seconds_bucket{le=\"\(bound)\"} \(state.readyCounts[index])")
        }
        out += [
            "hangar_spawn_ready_seconds_bucket{le=\"+Inf\"} \(state.readyCount)",
            "hangar_spawn_ready_seconds_sum \(state.readySum)", "hangar_spawn_ready_seconds_count \(state.readyCount)",
        ]
    }
}

extension Drone {
    /// The drone's metrics in Prometheus' text format: backends by status, spawns, failures,
    /// the spawn-to-ready histogram, and per running backend its memory (now and peak) and
    /// CPU time from its cgroup.
    public func metrics() -> String {
        var out: [String] = []
        let all = allBackends
        out += ["# HELP hangar_backends Backends on this drone by status.", "# TYPE hangar_backends gauge"]
        for status in BackendStatus.allCases {
            out.append("hangar_backends{status=\"\(status)\"} \(all.filter { $0.current.status == status }.count)")
        }
        counters.render(into: &out)
        let running = all.filter { $0.current.status < .terminated }
        let samples = running.compactMap { backend in backend.statistics().map { (backend, $0) } }
        out += [
            "# HELP hangar_backend_memory_bytes Memory a backend uses now.", "# TYPE hangar_backend_memory_bytes gauge",
        ]
        for (backend, stats) in samples {
            if let current = stats.currentMemory { out.append("hangar_backend_memory_bytes{\(labels(backend))} \(current.bytes)") }
        }
        out += [
            "# HELP hangar_backend_memory_peak_bytes The most memory a backend used at once.",
            "# TYPE hangar_backend_memory_peak_bytes gauge",
        ]
        for (backend, stats) in samples {
            if let peak = stats.peakMemory { out.append("hangar_backend_memory_peak_bytes{\(labels(backend))} \(peak.bytes)") }
        }
        out += [
            "# HELP hangar_backend_cpu_seconds_total CPU time of a backend's processes.",
            "# TYPE hangar_backend_cpu_seconds_total counter",
        ]
        for (backend, stats) in samples {
            if let cpu = stats.cpuTime {
                let seconds = Double(cpu.components.seconds) + Double(cpu.components.attoseconds) / 1e18
                out.append("hangar_backend_cpu_seconds_total{\(labels(backend))} \(seconds)")
            }
        }
        return out.joined(separator: "\n") + "\n"
    }

    private func labels(_ backend: Backend) -> String {
        "backend=\"\(backend.id)\",key=\"\(escaped(backend.key.rawValue))\""
    }

    private func escaped(_ value: String) -> String {
        value.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"").replacing("\n", with: "\\n")
    }
}
