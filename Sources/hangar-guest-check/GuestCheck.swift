// hangar-guest-check: the cgroup v2 driver against a real, pure cgroup v2 hierarchy.
// Built as a static executable and run as the payload of a QEMU guest
// (scripts/qemu-v2-test.sh, part of `make test`): this host's cgroups are hybrid, with
// no v2 memory controller. It spawns real sandboxes through SandboxRuntime and checks
// memory, pids, cpu, the outcome and the teardown. One PASS/FAIL line per check; the
// exit status is 0 only when every check passed.
//
// Usage: hangar-guest-check IMAGE_ROOT HANGAR_INIT
import Glibc
import HangarCore
import HangarSandbox
import Logging

/// PASS/FAIL lines, and how many failed.
final class Report {
    private(set) var failures = 0

    func check(_ name: String, _ passed: Bool, _ detail: @autoclosure () -> String = "") {
        // Straight to fd 1: the guest's console, in order with the kernel's messages.
        let line = "\(passed ? "PASS" : "FAIL") \(name)\(passed ? "" : ": " + detail())\n"
        _ = line.utf8CString.withUnsafeBufferPointer { write(1, $0.baseAddress, $0.count - 1) }
        if !passed { failures += 1 }
    }
}

func read(_ path: String) -> String? { readTextFile(path) }

/// hangar/ on the unified hierarchy: next to the leaf the supervisor moved into.
func hangarParent() -> String {
    let own = (read("/proc/self/cgroup") ?? "").split(separator: "\n").first { $0.hasPrefix("0::") }
    let base = "/sys/fs/cgroup" + String(own?.dropFirst(3) ?? "/").filter { $0 != "\n" }
    return (base.hasSuffix("/supervisor") ? String(base.dropLast("/supervisor".count)) : base) + "/hangar"
}

/// Sandbox cgroups below hangar/ (any runtime).
func sandboxGroups() -> [String] {
    var found: [String] = []
    let parent = hangarParent()
    for runtime in entries(parent) where runtime.hasPrefix("rt-") {
        found += entries(parent + "/" + runtime).filter { $0.hasPrefix("sb-") }.map { parent + "/" + runtime + "/" + $0 }
    }
    return found
}

func entries(_ path: String) -> [String] { directoryEntries(path) }

func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

@main
struct GuestCheck {
    static func main() async {
        let arguments = CommandLine.arguments
        guard arguments.count == 3 else {
            print("usage: hangar-guest-check IMAGE_ROOT HANGAR_INIT")  // before any other output
            exit(2)
        }
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        let report = Report()
        let check = report.check
        do {
            // Start where a drone runs under systemd: a group of its own that holds its
            // process, with no controller enabled below it.
            mkdir("/sys/fs/cgroup/drone", 0o755)
            let moved = "\(getpid())".withCString { text in
                let fd = open("/sys/fs/cgroup/drone/cgroup.procs", O_WRONLY | O_CLOEXEC)
                defer { close(fd) }
                return write(fd, text, strlen(text)) > 0
            }
            check("the check starts in /drone", moved, "cannot move into /sys/fs/cgroup/drone")
            var configuration = SandboxRuntimeConfiguration()
            configuration.initPath = arguments[2]
            configuration.cgroupDriver = .auto
            configuration.networkNamespacePool = 1
            let runtime = try SandboxRuntime(configuration: configuration, logger: Logger(label: "guest"))
            let image = try Image(root: arguments[1])
            func spec(_ script: String) -> SandboxSpec {
                var spec = SandboxSpec(image: image, command: ["sh", "-c", script])
                spec.stdio = (null, null, null)
                return spec
            }

            // The driver: v2, chosen on its own, with the supervisor in a leaf.
            let own = read("/proc/self/cgroup") ?? ""
            check("auto picks cgroup v2 and moves the supervisor into a leaf", own.contains("0::/drone/supervisor"), own)

            // memory.max with memory.oom.group: the whole sandbox ends, as oom.
            var hog = spec("x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived")
            hog.limits.memoryMax = .mebibytes(32)
            let oom = try await runtime.spawn(hog).outcome()
            check("memory.max: a hog ends as oom", oom.reason == .oom, "\(oom)")
            check(
                "memory.peak: the peak is reported near the limit",
                (oom.peakMemory ?? .mebibytes(0)) >= .mebibytes(16) && (oom.peakMemory ?? .mebibytes(999)) <= .mebibytes(33),
                "\(oom.peakMemory.map { "\($0)" } ?? "none")")

            // pids.max: a fork bomb is held while the sandbox lives.
            var bomb = spec(
                "mkfifo /tmp/hold; (i=0; while [ $i -lt 100 ]; do sleep 30 & i=$((i+1)); done) 2>/dev/null; read x < /tmp/hold")
            bomb.limits.pidsMax = 16
            let bombed = try await runtime.spawn(bomb)
            let membership = read("/proc/\(bombed.pid)/cgroup") ?? ""
            check(
                "CLONE_INTO_CGROUP: init is born in the sandbox's group", membership.contains("/\(bombed.id.rawValue)"),
                membership)
            var current = 999
            var events = ""
            for _ in 0..<300 {
                if let group = sandboxGroups().first(where: { $0.hasSuffix(bombed.id.rawValue) }) {
                    events = read(group + "/pids.events") ?? ""
                    current = Int((read(group + "/pids.current") ?? "").filter(\.isNumber)) ?? 999
                    if events.hasPrefix("max ") && !events.hasPrefix("max 0") { break }
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            check("pids.max: a fork bomb is held at 16", current <= 16, "pids.current \(current)")
            check("pids.events counts the refused forks", !events.hasPrefix("max 0"), events)
            bombed.kill()
            let bombOutcome = await bombed.outcome()
            check("kill: the outcome says killed", bombOutcome.reason == .killed, "\(bombOutcome)")

            // cpu.max: four spinners stay near half a core.
            let spin = "for i in 1 2 3 4; do (while :; do :; done) & done; sleep 3"
            var limited = spec(spin)
            limited.limits.cpu = 0.5
            limited.limits.cpuWeight = 50
            let quota = try await runtime.spawn(limited).outcome()
            let ratio = seconds(quota.cpuTime ?? .zero) / max(0.001, seconds(quota.wallTime))
            check("cpu.max: CPU time over wall time stays near 0.5", ratio > 0.15 && ratio < 0.8, "ratio \(ratio), \(quota)")

            // Wall timeout: the whole tree is killed, and cgroup.kill leaves nothing.
            var forever = spec("(setsid sleep 100 &); sleep 100")
            forever.wallTimeout = .seconds(1)
            let timedOut = try await runtime.spawn(forever).outcome()
            check("wall timeout ends the sandbox", timedOut.reason == .wallTimeout, "\(timedOut)")

            // Every sandbox's group is gone.
            let left = sandboxGroups()
            check("no sandbox cgroup is left", left.isEmpty, left.joined(separator: " "))

            // A runtime that is gone leaves its directory to the next runtime's sweep.
            let parent = hangarParent()
            let dead = parent + "/rt-999999-1"
            mkdir(dead, 0o755)
            mkdir(dead + "/sb-0123456789abcdef", 0o755)
            _ = try SandboxRuntime(configuration: configuration, logger: Logger(label: "guest"))
            check("a new runtime sweeps what a runtime that is gone left", access(dead, F_OK) != 0, dead)
            runtime.finish()
            let mine = entries(parent).filter { $0.hasPrefix("rt-\(getpid())-") }
            check("finish() removes the runtime's own directory", mine.isEmpty, mine.joined(separator: " "))
        } catch {
            check("the checks ran", false, "\(error)")
        }
        print(report.failures == 0 ? "ALL PASSED" : "\(report.failures) FAILED")
        exit(report.failures == 0 ? 0 : 1)
    }
}
