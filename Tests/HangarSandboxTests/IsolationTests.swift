import CShims
import Glibc
import HangarCore
import HangarSandbox
import HangarTestSupport
import Testing

/// The sandbox as its command sees it, and as the host sees it. Each test compares the
/// host's mounts, cgroups, spawn-root directory and sandbox-uid processes before and after.
@Suite("Sandbox isolation", .serialized, .timeLimit(.minutes(2)))
struct IsolationTests {
    let before = HostState.capture()

    @Test("init is PID 1 and the command runs in a new pid namespace")
    func pidNamespace() async throws {
        let result = try await TestSandbox.run(
            try TestSandbox.shell("echo $$; tr '\\0' ' ' </proc/1/cmdline; echo; ls /proc | grep -c '^[0-9]'"))
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(result.status == .exited(0))
        #expect(lines.first == "2", "the command is the first child of init")
        #expect(lines.dropFirst().first?.hasPrefix("hangar-init run 3 sh -c") == true)
        #expect(Int(lines.last ?? "") ?? 99 <= 4, "only init, the shell, ls and grep are visible")
        await expectHostRestored(before)
    }

    @Test("the hostname is the sandbox's own")
    func hostname() async throws {
        var spec = try TestSandbox.shell("hostname; cat /proc/sys/kernel/hostname")
        spec.hostname = try Hostname("tenant-42")
        let result = try await TestSandbox.run(spec)
        #expect(result.stdout == "tenant-42\ntenant-42\n")
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count)
        #expect(String(decoding: host.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self) != "tenant-42")
        await expectHostRestored(before)
    }

    @Test("a canary file on the host is unreachable, also through /proc/1/root, .. chains and symlinks")
    func hostCanary() async throws {
        let name = "hangar-canary-\(UInt32.random(in: 0...UInt32.max))"
        let path = "/tmp/\(name)"
        let fd = open(path, O_CREAT | O_WRONLY | O_EXCL | O_CLOEXEC, 0o644)
        try #require(fd >= 0)
        _ = write(fd, "secret", 6)
        close(fd)
        defer { unlink(path) }
        let script = """
            cat \(path) /proc/1/root\(path) /proc/self/root\(path) /proc/1/cwd\(path) 2>/dev/null
            cat /../../../..\(path) /tmp/../../..\(path) 2>/dev/null
            ln -s / /tmp/up && cat /tmp/up\(path) /tmp/up/../..\(path) 2>/dev/null
            find / -xdev -name \(name) 2>/dev/null
            find /proc/1/root/ -maxdepth 2 -name \(name) 2>/dev/null
            echo done
            """
        let result = try await TestSandbox.run(try TestSandbox.shell(script))
        #expect(!result.stdout.contains("secret"))
        #expect(!result.stdout.contains(name))
        #expect(result.stdout.hasSuffix("done\n"))
        await expectHostRestored(before)
    }

    @Test("only lo exists, there is no route but loopback, and the host's loopback is unreachable")
    func network() async throws {
        // A real listener on the host's loopback; the sandbox's 127.0.0.1 is its own.
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try #require(listener >= 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        try withUnsafeMutablePointer(to: &address) { pointer in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                try #require(bind(listener, $0, length) == 0)
                try #require(getsockname(listener, $0, &length) == 0)
            }
        }
        try #require(listen(listener, 8) == 0)
        let port = UInt16(bigEndian: address.sin_port)

        let script = """
            ls /sys/class/net 2>/dev/null; ip -o link | cut -d: -f2
            echo routes; ip route; ip -6 route; tail -n +2 /proc/net/route
            echo probe; echo hi | nc -w 1 127.0.0.1 \(port) && echo CONNECTED
            echo end
            """
        let result = try await TestSandbox.run(try TestSandbox.shell(script))
        let links = result.stdout.components(before: "routes").split(separator: "\n").map {
            $0.trimmingCharacters(in: " ")
        }
        #expect(links.filter { !$0.isEmpty } == ["lo"])
        let routes = result.stdout.components(after: "routes").components(before: "probe")
        #expect(!routes.contains("default"))
        #expect(!routes.contains("via"))
        for line in routes.split(separator: "\n") where !line.isEmpty {
            #expect(line.contains("lo") || line.contains("::1"), "route outside loopback: \(line)")
        }
        #expect(!result.stdout.contains("CONNECTED"))
        // Nothing ever reached the host's listener.
        var pending = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
        #expect(poll(&pending, 1, 0) == 0)
        await expectHostRestored(before)
    }

    @Test("the command holds no capabilities, has no_new_privs and a seccomp filter")
    func confinement() async throws {
        let result = try await TestSandbox.run(
            try TestSandbox.shell("grep -E '^(Cap(Inh|Eff|Prm|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status"))
        var fields: [String: String] = [:]
        for line in result.stdout.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: " \t") }
            if parts.count == 2 { fields[parts[0]] = parts[1] }
        }
        for cap in ["CapInh", "CapEff", "CapPrm", "CapBnd", "CapAmb"] {
            #expect(fields[cap] == "0000000000000000", "\(cap) = \(fields[cap] ?? "missing")")
        }
        #expect(fields["NoNewPrivs"] == "1")
        #expect(fields["Seccomp"] == "2")
        await expectHostRestored(before)
    }

    @Test("a non-root user inside gets no capabilities and no supplementary groups")
    func nonRootUser() async throws {
        var spec = try TestSandbox.shell("id -u; id -g; grep -E '^(Groups|CapEff|CapPrm|CapBnd):' /proc/self/status")
        spec.uid = 1000
        spec.gid = 1000
        let result = try await TestSandbox.run(spec)
        #expect(result.status == .exited(0), "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map { $0.split(separator: "\t").joined(separator: " ") }
        #expect(Array(lines.prefix(2)) == ["1000", "1000"])
        let groups = lines.first { $0.hasPrefix("Groups:") }.map { $0.dropFirst(7).trimmingCharacters(in: " ") }
        #expect(groups == "", "supplementary groups: \(groups ?? "missing")")
        for cap in ["CapEff:", "CapPrm:", "CapBnd:"] {
            #expect(lines.contains("\(cap) 0000000000000000"))
        }
        await expectHostRestored(before)
    }

    @Test("init's memory cannot be reached through /proc/1/mem")
    func initMemory() async throws {
        let result = try await TestSandbox.run(
            try TestSandbox.shell("echo x > /proc/1/mem && echo WROTE; cat /proc/1/environ && echo READ; echo end"))
        #expect(!result.stdout.contains("WROTE"))
        #expect(!result.stdout.contains("READ"))
        #expect(result.stdout.hasSuffix("end\n"))
        await expectHostRestored(before)
    }

    @Test("uid 0 inside is an unprivileged uid on the host, and only fds 0-2 are open at exec")
    func hostView() async throws {
        let started = try await TestSandbox.start(try TestSandbox.shell("id -u; exec sleep 30"))
        let initPID = started.sandbox.pid
        // The command is init's only child.
        let command = try await TestSandbox.commandPID(of: started.sandbox, running: "sleep")
        for pid in [String(initPID), command] {
            let status = readFile("/proc/\(pid)/status") ?? ""
            let uids = status.split(separator: "\n").first { $0.hasPrefix("Uid:") }?.split(separator: "\t").dropFirst()
            let gids = status.split(separator: "\n").first { $0.hasPrefix("Gid:") }?.split(separator: "\t").dropFirst()
            for id in (uids ?? []) + (gids ?? []) {
                #expect(UInt64(id) ?? 0 >= 1 << 30, "pid \(pid) runs as host id \(id)")
            }
        }
        #expect(entries(of: "/proc/\(command)/fd").sorted() == ["0", "1", "2"])
        #expect(entries(of: "/proc/\(initPID)/fd").sorted() == ["0", "1", "2"])
        started.sandbox.kill()
        let result = try await started.finish()
        #expect(result.stdout == "0\n")
        #expect(result.status == .signaled(SIGKILL))
        await expectHostRestored(before)
    }

    @Test("zombies are reaped by init")
    func zombies() async throws {
        let script = """
            for i in 1 2 3 4 5; do (sleep 0.05 &); done
            sleep 0.5
            grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l
            """
        let result = try await TestSandbox.run(try TestSandbox.shell(script))
        #expect(result.stdout == "0\n")
        await expectHostRestored(before)
    }

    @Test("SIGTERM to the sandbox ends the command through init")
    func terminate() async throws {
        let started = try await TestSandbox.start(
            try TestSandbox.shell("trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.05; done"))
        try await Task.sleep(for: .milliseconds(300))
        started.sandbox.signal(SIGTERM)
        let result = try await started.finish()
        #expect(result.status == .exited(3))
        #expect(result.stdout == "ready\ngot-term\n")
        await expectHostRestored(before)
    }

    @Test("a double-forked daemon dies with the sandbox")
    func daemonDies() async throws {
        let result = try await TestSandbox.run(try TestSandbox.shell("(setsid sleep 60 &) ; echo started"))
        #expect(result.stdout == "started\n")
        await expectHostRestored(before)
    }

    @Test("writes never change the image, and a second sandbox sees the original files")
    func imageUnchanged() async throws {
        let image = try TestSandbox.image("busybox")
        let digest = try TreeDigest(root: image.root)
        let script = """
            echo tampered > /etc/passwd; rm -f /bin/ls; mkdir /new; echo x > /new/file
            chmod 777 /etc; touch /etc/group; cat /etc/passwd
            """
        let first = try await TestSandbox.run(try TestSandbox.shell(script))
        #expect(first.stdout == "tampered\n")
        #expect(try TreeDigest(root: image.root) == digest)
        let second = try await TestSandbox.run(
            try TestSandbox.shell("head -n 1 /etc/passwd; ls /bin/ls; ls /new 2>&1 | head -n 1"))
        #expect(second.stdout.hasPrefix("root:x:0:0:root:/root:/bin/sh\n/bin/ls\n"))
        #expect(second.stdout.contains("No such file"))
        await expectHostRestored(before)
    }

    @Test("the upper layer is bounded by its size limit")
    func upperSize() async throws {
        var spec = try TestSandbox.shell("dd if=/dev/zero of=/fill bs=1M count=64 2>&1")
        spec.upperSize = .mebibytes(8)
        let result = try await TestSandbox.run(spec)
        #expect(result.stdout.contains("No space left on device"))
        await expectHostRestored(before)
    }

    @Test("a memory limit is enforced through the cgroup")
    func memoryLimit() async throws {
        var spec = try TestSandbox.shell("cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null; grep memory /proc/self/cgroup")
        spec.limits = ResourceLimits(memoryMax: .mebibytes(32), pidsMax: 64)
        let result = try await TestSandbox.run(spec)
        #expect(result.stdout.contains("memory:/\n"), "the sandbox's cgroup is the root of its cgroup namespace")
        var hog = SandboxSpec(
            image: try TestSandbox.image("python"),
            command: ["python3", "-c", "b = bytearray(200 << 20); print('allocated')"])
        hog.limits = ResourceLimits(memoryMax: .mebibytes(32))
        let hogged = try await TestSandbox.run(hog)
        #expect(!hogged.stdout.contains("allocated"))
        #expect(hogged.status == .exited(128 + SIGKILL), "the OOM killer ends the command")
        await expectHostRestored(before)
    }

    @Test("python3 and its standard library work in the python image")
    func python() async throws {
        let spec = SandboxSpec(
            image: try TestSandbox.image("python"),
            command: ["python3", "-c", "import json, sqlite3, ssl, hashlib; print(1+1)"])
        let result = try await TestSandbox.run(spec)
        #expect(result.stdout == "2\n", "\(result.stderr)")
        #expect(result.status == .exited(0))
        await expectHostRestored(before)
    }
}

extension String {
    func components(before marker: String) -> String {
        guard let range = range(of: marker) else { return self }
        return String(self[..<range.lowerBound])
    }

    func components(after marker: String) -> String {
        guard let range = range(of: marker) else { return "" }
        return String(self[range.upperBound...])
    }

    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let c = s.first, set.contains(c) { s = s.dropFirst() }
        while let c = s.last, set.contains(c) { s = s.dropLast() }
        return String(s)
    }

    func range(of marker: String) -> Range<String.Index>? {
        var index = startIndex
        while index < endIndex {
            if self[index...].hasPrefix(marker) { return index..<self.index(index, offsetBy: marker.count) }
            index = self.index(after: index)
        }
        return nil
    }
}

extension Substring {
    func trimmingCharacters(in set: String) -> String { String(self).trimmingCharacters(in: set) }
}
