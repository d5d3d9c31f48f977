import Glibc
import HangarCore
import HangarDrone
import HangarPolicy
import HangarSandbox
import HangarTestSupport
import Logging
import Synchronization
import Testing

/// Backends on a drone, with real servers in real sandboxes.
@Suite("Drone lifecycle", .serialized, .timeLimit(.minutes(3)))
final class DroneTests: Sendable {
    let before = HostState.capture()
    /// The policy directories this test made, removed when it ends.
    private let policyDirectories = Mutex<[TemporaryDirectory]>([])

    deinit { policyDirectories.withLock { $0.forEach { $0.remove() } } }

    /// A drone with no log files and no data root, and with the repository's policies in
    /// a directory of their own (`policies`), `backend` (lines of a `[backend]` table) and
    /// `extra` (more tables) added to busybox's and python's.
    func drone(
        backend: String = "grace = \"1s\"\nstartup_timeout = \"20s\"", extra: String = "",
        _ adjust: (inout DroneConfiguration) -> Void = { _ in }
    ) throws -> (drone: Drone, policies: String) {
        let directory = try TemporaryDirectory("hangar-policies")
        policyDirectories.withLock { $0.append(directory) }
        let source = TestSandbox.repositoryRoot + "/policies/"
        for name in ["default", "busybox", "python"] {
            var text = try #require(readFile(source + name + ".toml"))
            if name != "default" { text += "\n[backend]\n\(backend)\n\(extra)\n" }
            let fd = open(directory.path + "/\(name).toml", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            try writeAll(fd, Array(text.utf8))
            close(fd)
        }
        var configuration = DroneConfiguration()
        configuration.logDirectory = nil
        configuration.dataRoot = nil
        adjust(&configuration)
        // Backends' lives are logged at info; the suite's output keeps warnings and errors.
        var logger = Logger(label: "test.drone")
        logger.logLevel = .warning
        let drone = try Drone(
            runtime: TestSandbox.runtime, policies: PolicyLoader(directory: directory.path), images: TestSandbox.images,
            configuration: configuration, logger: logger)
        return (drone, directory.path)
    }

    /// A python HTTP server on $PORT serving its environment as /env.
    func httpServer(key: String = "doc-1") throws -> SpawnRequest {
        var request = SpawnRequest(key: try KeyName(key), image: try ImageName("python"))
        request.command = [
            "sh", "-c",
            "mkdir /tmp/www && env > /tmp/www/env && cd /tmp/www && exec python3 -m http.server \"$PORT\" --bind 127.0.0.1",
        ]
        return request
    }

    /// GET `path` through a connection into the backend.
    func get(_ backend: Backend, _ path: String) throws -> String {
        let fd = try backend.connect()
        defer { close(fd) }
        let request = "GET \(path) HTTP/1.0\r\n\r\n"
        try writeAll(fd, Array(request.utf8))
        return String(decoding: try readToEnd(fd), as: UTF8.self)
    }

    func waitFor(_ status: BackendStatus, _ backend: Backend, within: Duration = .seconds(20)) async {
        let deadline = ContinuousClock.now + within
        while backend.current.status < status && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    @Test("an HTTP backend goes through every status in order, with Hangar's and Plane's variables")
    func lifecycle() async throws {
        let drone = try drone().drone
        let backend = try drone.spawn(try httpServer())
        await waitFor(.ready, backend)
        #expect(backend.current.status == .ready)
        let env = try get(backend, "/env")
        #expect(env.hasPrefix("HTTP/1.0 200"))
        let lines = Set(env.split(whereSeparator: \.isNewline).map(String.init))
        for variable in [
            "PORT=8080", "HANGAR_KEY=doc-1", "HANGAR_BACKEND_ID=\(backend.id)", "HANGAR_FENCING_TOKEN=1",
            "SESSION_BACKEND_ID=\(backend.id)", "SESSION_BACKEND_KEY=doc-1", "SESSION_BACKEND_FENCING_TOKEN=1",
        ] {
            #expect(lines.contains(variable), "\(variable)")
        }
        let metrics = drone.metrics()
        #expect(metrics.contains("hangar_backends{status=\"ready\"} 1\n"), "\(metrics)")
        #expect(metrics.contains("hangar_spawns_total 1\n"))
        #expect(metrics.contains("hangar_spawn_ready_seconds_count 1\n"))
        #expect(metrics.contains("hangar_backend_memory_bytes{backend=\"\(backend.id)\",key=\"doc-1\"} "))
        #expect(metrics.contains("hangar_backend_cpu_seconds_total{backend=\"\(backend.id)\",key=\"doc-1\"} "))
        backend.terminate(.external)
        let end = await backend.terminated()
        #expect(end.reason == .external)
        #expect(backend.statuses == [.scheduled, .loading, .starting, .waiting, .ready, .terminating, .terminated])
        #expect(drone.metrics().contains("hangar_backends{status=\"terminated\"} 1\n"))
        await expectHostRestored(before)
    }

    @Test("a backend that never listens ends with startup-timeout")
    func startupTimeout() async throws {
        let drone = try drone(backend: "startup_timeout = \"1s\"\ngrace = \"1s\"").drone
        var request = SpawnRequest(key: try KeyName("quiet"), image: try ImageName("busybox"))
        request.command = ["sleep", "60"]
        let backend = try drone.spawn(request)
        let end = await backend.terminated()
        #expect(end.reason == .startupTimeout)
        await expectHostRestored(before)
    }

    @Test("one that exits reports its code; one that ignores SIGTERM is killed after the grace")
    func exitsAndStubborn() async throws {
        let drone = try drone().drone
        var exits = SpawnRequest(key: try KeyName("exits"), image: try ImageName("busybox"))
        exits.command = ["sh", "-c", "echo to stdout; echo to stderr >&2; exit 7"]
        let first = try drone.spawn(exits)
        let end = await first.terminated()
        #expect(end.reason == .exited && end.exitCode == 7, "\(end)")
        try await Task.sleep(for: .milliseconds(100))  // the reader threads drain the pipes
        #expect(first.logs.text.contains("to stdout\n") && first.logs.text.contains("to stderr\n"), "\(first.logs.text)")

        var stubborn = try httpServer(key: "stubborn")
        stubborn.command = [
            "sh", "-c", "trap '' TERM; mkdir /tmp/w; cd /tmp/w; python3 -m http.server \"$PORT\" --bind 127.0.0.1 & wait; sleep 60",
        ]
        let second = try drone.spawn(stubborn)
        await waitFor(.ready, second)
        let start = ContinuousClock.now
        second.terminate(.external)
        let stopped = await second.terminated()
        #expect(stopped.reason == .external)
        #expect(second.statuses.contains(.hardTerminating), "\(second.statuses)")
        #expect(ContinuousClock.now - start >= .milliseconds(950), "the grace period was given")
        await expectHostRestored(before)
    }

    @Test("idle shutdown fires after max_idle with no connection, never while one is open")
    func idle() async throws {
        let drone = try drone().drone
        var request = try httpServer(key: "idle")
        request.limits.idleTimeout = 1
        let backend = try drone.spawn(request)
        await waitFor(.ready, backend)
        // A connection held open (carried with splice) keeps it alive past max_idle.
        let client = try LoopbackPair()
        backend.traffic.carry(client: client.inner, backend: try backend.connect())
        try await Task.sleep(for: .milliseconds(2500))
        #expect(backend.current.status == .ready, "an open connection keeps it running")
        #expect(backend.traffic.openConnections == 1)
        client.closeOuter()
        let end = await backend.terminated()
        #expect(end.reason == .idle)
        await expectHostRestored(before)
    }

    /// A WebSocket echo server (Python's websockets package, from the python image) on $PORT.
    func webSocketServer(key: String) throws -> SpawnRequest {
        var request = SpawnRequest(key: try KeyName(key), image: try ImageName("python"))
        request.command = [
            "python3", "-c",
            """
            import asyncio, os, websockets
            async def echo(socket, path=None):
                async for message in socket:
                    await socket.send(message)
            async def main():
                async with websockets.serve(echo, "127.0.0.1", int(os.environ["PORT"])):
                    await asyncio.Future()
            asyncio.run(main())
            """,
        ]
        return request
    }

    @Test("a WebSocket echo backend goes through every status, echoes through ingress, and is not idle while a WebSocket is open")
    func webSocket() async throws {
        let drone = try drone().drone
        let secret = Array("an ingress secret of enough bytes".utf8)
        let listener = try IngressListener(drone: drone, secret: secret, logger: Logger(label: "test"))
        defer { listener.close() }
        var request = try webSocketServer(key: "ws-1")
        request.limits.idleTimeout = 1
        let backend = try drone.spawn(request)
        await waitFor(.ready, backend, within: .seconds(30))
        #expect(backend.current.status == .ready, "\(backend.current) \(backend.logs.text)")
        let fd = try ingressConnection(listener, backend: backend.id, secret: secret)
        let client = try WebSocketClient(fd: fd)
        try client.send("hello through ingress")
        #expect(try client.receive() == "hello through ingress")
        // Quiet for longer than the idle timeout, with the WebSocket open.
        try await Task.sleep(for: .milliseconds(2500))
        #expect(backend.current.status == .ready, "an open WebSocket keeps it running")
        try client.send("still here")
        #expect(try client.receive() == "still here")
        close(fd)
        let end = await backend.terminated()
        #expect(end.reason == .idle, "\(end)")
        #expect(backend.statuses == [.scheduled, .loading, .starting, .waiting, .ready, .terminating, .terminated])
        await expectHostRestored(before)
    }

    @Test("a reset from the backend reaches the client as a reset, not as an orderly end")
    func resetPassesThrough() async throws {
        let drone = try drone(backend: "probe = \"tcp\"\ngrace = \"1s\"").drone
        let secret = Array("an ingress secret of enough bytes".utf8)
        let listener = try IngressListener(drone: drone, secret: secret, logger: Logger(label: "test"))
        defer { listener.close() }
        var request = SpawnRequest(key: try KeyName("resets"), image: try ImageName("python"))
        request.command = [
            "python3", "-c",
            """
            import os, socket, struct
            server = socket.create_server(("127.0.0.1", int(os.environ["PORT"])))
            while True:
                connection, _ = server.accept()
                connection.recv(1)
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                connection.close()
            """,
        ]
        let backend = try drone.spawn(request)
        await waitFor(.ready, backend, within: .seconds(30))
        let fd = try ingressConnection(listener, backend: backend.id, secret: secret)
        defer { close(fd) }
        try writeAll(fd, Array("x".utf8))
        var byte: UInt8 = 0
        let n = read(fd, &byte, 1)
        let error = errno
        #expect(n == -1 && error == ECONNRESET, "read gave \(n), errno \(error)")
        backend.terminate(.external)
        _ = await backend.terminated()
        await expectHostRestored(before)
    }

    @Test("a backend lives no longer than its lifetime; idle and lifetime beyond the policy's bounds are refused")
    func lifetimeAndBounds() async throws {
        let (drone, policies) = try drone()
        var request = try httpServer(key: "short-lived")
        request.limits.wallTimeout = 2
        let backend = try drone.spawn(request)
        let end = await backend.terminated()
        #expect(end.reason == .lifetime, "\(end)")
        #expect(backend.statuses.contains(.ready))

        var tooIdle = try httpServer(key: "too-idle")
        tooIdle.limits.idleTimeout = 2 * 86400
        let idleError = #expect(throws: DroneError.self) { try drone.spawn(tooIdle) }
        #expect(
            idleError?.description
                == "backend for key too-idle: request: limits.idle_timeout: 172800s is above the policy's maximum 86400s (limits.max.idle_timeout in \(policies)/default.toml)",
            "\(idleError.map { "\($0)" } ?? "")")
        var tooLong = try httpServer(key: "too-long")
        tooLong.limits.wallTimeout = 2 * 86400
        #expect(throws: DroneError.self) { try drone.spawn(tooLong) }
        await expectHostRestored(before)
    }

    @Test("a per-key data directory: read-write, kept across backends of the key, and no key escapes the data root")
    func dataDirectory() async throws {
        let withData = "[filesystem]\ndata_dir = \"/data\""
        let root = try TemporaryDirectory("hangar-data")
        defer { root.remove() }
        let drone = try drone(extra: withData) { $0.dataRoot = root.path }.drone
        var writer = SpawnRequest(key: try KeyName("doc-a"), image: try ImageName("busybox"))
        writer.command = ["sh", "-c", "echo \"$HANGAR_KEY\" > /data/note && ls -ln /data/note"]
        let first = try drone.spawn(writer)
        let written = await first.terminated()
        #expect(written.reason == .exited && written.exitCode == 0, "\(written) \(first.logs.text)")
        #expect(readFile(root.path + "/doc-a/note") == "doc-a\n")
        var status = stat()
        #expect(stat(root.path + "/doc-a/note", &status) == 0 && status.st_uid == 900_000_000, "owned by the bind owner, not host root")

        var reader = SpawnRequest(key: try KeyName("doc-a"), image: try ImageName("busybox"))
        reader.command = ["sh", "-c", "test \"$(cat /data/note)\" = doc-a"]
        let second = try drone.spawn(reader)
        let read = await second.terminated()
        #expect(read.exitCode == 0, "the next backend of the key finds what the first wrote: \(second.logs.text)")

        var other = SpawnRequest(key: try KeyName("doc-b"), image: try ImageName("busybox"))
        other.command = ["sh", "-c", "test ! -e /data/note"]
        let third = try drone.spawn(other)
        #expect(await third.terminated().exitCode == 0, "another key has its own directory")

        #expect(throws: InvalidValue.self, "not a key at all") { try KeyName("new\nline") }
        #expect(throws: InvalidValue.self, "not a key at all") { try KeyName(String(repeating: "k", count: 256)) }
        for key in ["..", ".", "a/b", "../escape", "/etc"] {
            var hostile = SpawnRequest(key: try KeyName(key), image: try ImageName("busybox"))
            hostile.command = ["true"]
            let error = #expect(throws: DroneError.self, "key \(key.debugDescription)") { try drone.spawn(hostile) }
            #expect(error?.description.contains("cannot name a data directory below \(root.path)") == true, "\(error.map { "\($0)" } ?? "")")
        }
        // A symlink planted where a key's directory would be is not followed.
        symlink("/etc", root.path + "/planted")
        var planted = SpawnRequest(key: try KeyName("planted"), image: try ImageName("busybox"))
        planted.command = ["true"]
        let fourth = try drone.spawn(planted)
        let refused = await fourth.terminated()
        #expect(refused.reason == .internalError, "\(refused)")
        #expect(fourth.logs.text.contains("it is not a directory"), "\(fourth.logs.text)")
        #expect(entries(of: root.path) == ["doc-a", "doc-b", "planted"], "nothing else was made")

        let without = try self.drone(extra: withData).drone
        var refusedByDrone = SpawnRequest(key: try KeyName("doc-a"), image: try ImageName("busybox"))
        refusedByDrone.command = ["true"]
        #expect(throws: DroneError.self, "a drone without a data root refuses such a policy") { try without.spawn(refusedByDrone) }
        await expectHostRestored(before)
    }

    @Test("logs are kept in a bounded buffer and a rotating file")
    func logs() async throws {
        var template = Array("/tmp/hangar-logs-XXXXXX".utf8CString)
        let directory = String(cString: try #require(mkdtemp(&template)))
        let drone = try drone(backend: "log_buffer = \"4k\"") { $0.logDirectory = directory }.drone
        var chatty = SpawnRequest(key: try KeyName("chatty"), image: try ImageName("busybox"))
        chatty.command = ["sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done"]
        let backend = try drone.spawn(chatty)
        _ = await backend.terminated()
        try await Task.sleep(for: .milliseconds(200))
        let kept = backend.logs.text
        #expect(kept.utf8.count <= 4096)
        #expect(kept.hasSuffix("line 1999\n"))
        let file = readFile(directory + "/\(backend.id).log") ?? ""
        #expect(file.hasPrefix("line 0\n") && file.hasSuffix("line 1999\n"), "the file has everything")
        unlink(directory + "/\(backend.id).log")
        rmdir(directory)
        await expectHostRestored(before)
    }

    @Test("200 backends spawned at once, then terminated, leave nothing behind")
    func twoHundred() async throws {
        let drone = try drone() { $0.maxBackends = 250 }.drone
        _ = SandboxRuntime.concurrentSpawnsPeak(reset: true)
        var request = SpawnRequest(key: try KeyName("many"), image: try ImageName("busybox"))
        request.command = ["httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/tmp"]
        let start = ContinuousClock.now
        var backends: [Backend] = []
        for index in 0..<200 {
            request.key = try KeyName("many-\(index)")
            backends.append(try drone.spawn(request))
        }
        for backend in backends { await waitFor(.ready, backend, within: .seconds(60)) }
        let readyAfter = ContinuousClock.now - start
        #expect(backends.allSatisfy { $0.current.status == .ready }, "\(backends.map(\.current.status).filter { $0 != .ready })")
        #expect(drone.running.count == 200)
        let peak = SandboxRuntime.concurrentSpawnsPeak()
        #expect(peak > 1, "spawns ran side by side on the spawning threads (at most \(peak) at once)")
        for backend in backends { backend.terminate(.external) }
        for backend in backends { _ = await backend.terminated() }
        #expect(drone.running.isEmpty)
        print("200 backends ready after \(readyAfter)")
        await expectHostRestored(before)
    }

    @Test("ingress: a signed preface reaches the backend; a missing, wrong or stale one is refused and reaches nothing")
    func ingress() async throws {
        let drone = try drone().drone
        let secret = Array("an ingress secret of enough bytes".utf8)
        let listener = try IngressListener(
            drone: drone, secret: secret, port: 0, appearWithin: .milliseconds(200), logger: Logger(label: "test"))
        defer { listener.close() }
        let backend = try drone.spawn(try httpServer(key: "ingress"))
        await waitFor(.ready, backend)

        func exchange(_ preface: String) throws -> String {
            let fd = try ingressSocket(listener)
            defer { close(fd) }
            try? writeAll(fd, Array((preface + "GET /env HTTP/1.0\r\n\r\n").utf8))
            // A refused connection is closed by the drone, or reset: no bytes either way.
            return String(decoding: (try? readToEnd(fd)) ?? [], as: UTF8.self)
        }

        let preface = IngressPreface.make(backend: backend.id, secret: secret)
        let good = try exchange(preface)
        #expect(good.hasPrefix(IngressPreface.accepted + "HTTP/1.0 200"), "\(good.prefix(60))")
        // The backend's log reaches the buffer on a reader thread: wait for the accepted
        // request before counting what the refused ones add.
        try await eventually("the accepted request is in the backend's log") {
            backend.logs.text.components(matching: "GET /env") >= 1
        }
        let requestsSeen = backend.logs.text.components(matching: "GET /env")
        #expect(try exchange("").isEmpty, "no preface")
        #expect(try exchange(IngressPreface.make(backend: backend.id, secret: Array("another secret of enough bytes".utf8))).isEmpty)
        #expect(try exchange(IngressPreface.make(backend: backend.id, secret: secret, now: Int(time(nil)) - 3600)).isEmpty)
        // A time that would overflow the window's arithmetic is malformed, not a crash.
        #expect(try exchange("HANGAR-INGRESS 2 \(backend.id) -9223372036854775808 \(String(repeating: "0", count: 32)) 00\n").isEmpty)
        // The accepted preface, captured and sent again: a replay.
        #expect(try exchange(preface).isEmpty)
        // A signed preface for a backend the drone never heard of is answered, after a wait.
        #expect(try exchange(IngressPreface.make(backend: BackendID.random(), secret: secret)) == "HANGAR-INGRESS NO unknown-backend\n")
        #expect(listener.refused == [.malformed, .badSignature, .expired, .malformed, .replayed, .unknownBackend], "\(listener.refused)")
        try await Task.sleep(for: .milliseconds(100))
        #expect(backend.logs.text.components(matching: "GET /env") == requestsSeen, "no refused byte reached the backend")
        backend.terminate(.external)
        _ = await backend.terminated()
        await expectHostRestored(before)
    }

    @Test("a terminate while loading or starting ends the backend")
    func terminateEarly() async throws {
        let drone = try drone().drone
        let loading = try drone.spawn(try httpServer(key: "early-1"))
        loading.terminate(.external)
        let first = await loading.terminated()
        #expect(first.reason == .external)
        let starting = try drone.spawn(try httpServer(key: "early-2"))
        await waitFor(.starting, starting, within: .seconds(5))
        starting.terminate(.external)
        let second = await starting.terminated()
        #expect(second.reason == .external)
        #expect(!second.description.isEmpty)
        await expectHostRestored(before)
    }

    @Test("a memory hog ends as oom; a drone beyond its capacity refuses a spawn")
    func oomAndCapacity() async throws {
        let drone = try drone() { $0.maxBackends = 1 }.drone
        var hog = SpawnRequest(key: try KeyName("hog"), image: try ImageName("busybox"))
        hog.command = ["sh", "-c", "x=$(head -c 1000000000 /dev/zero | tr '\\0' a)"]
        hog.limits.memoryMax = .mebibytes(32)
        let backend = try drone.spawn(hog)
        let refused = #expect(throws: DroneError.self) { try drone.spawn(try httpServer(key: "second")) }
        #expect(refused?.description == "the drone is full: 1 backends of 1")
        let end = await backend.terminated()
        #expect(end.reason == .oom, "\(end)")
        await expectHostRestored(before)
    }
}

/// A TCP connection to a drone's ingress port on loopback, opened with a signed preface
/// and accepted (the drone's `OK` line read).
func ingressConnection(_ listener: IngressListener, backend: BackendID, secret: [UInt8]) throws -> Int32 {
    let fd = try ingressSocket(listener)
    try writeAll(fd, Array(IngressPreface.make(backend: backend, secret: secret).utf8))
    guard case .some(nil) = IngressPreface.readAnswer(from: fd) else {
        close(fd)
        throw TestFailure("the drone did not accept the preface")
    }
    return fd
}

/// A TCP connection to a drone's ingress port on loopback, nothing sent yet.
func ingressSocket(_ listener: IngressListener) throws -> Int32 {
    try connectLoopback(listener.port)
}


func readExactly(_ fd: Int32, _ count: Int) throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    var done = 0
    while done < count {
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, count - done) }
        guard n > 0 else { throw TestFailure(n == 0 ? "EOF after \(done) of \(count) bytes" : "read: errno \(errno)") }
        done += n
    }
    return bytes
}

/// A small WebSocket client (RFC 6455) on a connected socket: the opening handshake and
/// text frames, masked as a client must.
struct WebSocketClient {
    let fd: Int32

    /// Performs the opening handshake; checks the 101 and the accept value (the RFC's
    /// sample key and its known answer).
    init(fd: Int32) throws {
        self.fd = fd
        let request =
            "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        try writeAll(fd, Array(request.utf8))
        var head: [UInt8] = []
        while !head.suffix(4).elementsEqual("\r\n\r\n".utf8) {
            head += try readExactly(fd, 1)
            guard head.count < 8192 else { throw TestFailure("no end of the handshake's response") }
        }
        let text = String(decoding: head, as: UTF8.self)
        guard text.hasPrefix("HTTP/1.1 101"), text.lowercased().contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=")
        else { throw TestFailure("not a WebSocket handshake: \(text)") }
    }

    func send(_ message: String) throws {
        let payload = Array(message.utf8)
        precondition(payload.count < 126)
        let mask: [UInt8] = (0..<4).map { _ in UInt8.random(in: 0...255) }
        let masked = payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        try writeAll(fd, [0x81, 0x80 | UInt8(payload.count)] + mask + masked)
    }

    /// The next text frame's payload (control frames are skipped).
    func receive() throws -> String {
        while true {
            let header = try readExactly(fd, 2)
            var length = Int(header[1] & 0x7f)
            if length == 126 { length = try readExactly(fd, 2).reduce(0) { $0 << 8 | Int($1) } }
            let payload = try readExactly(fd, length)
            if header[0] & 0x0f == 1 { return String(decoding: payload, as: UTF8.self) }
        }
    }
}

/// A connected pair of unix sockets: `inner` goes to the drone, `outer` plays the client.
struct LoopbackPair {
    let inner: Int32
    let outer: Int32

    init() throws {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw TestFailure("socketpair: errno \(errno)")
        }
        inner = fds[0]
        outer = fds[1]
    }

    func closeOuter() { close(outer) }
}

extension String {
    /// How many times `needle` occurs.
    func components(matching needle: String) -> Int {
        var count = 0
        var rest = self[...]
        while let range = rest.firstRange(of: needle) {
            count += 1
            rest = rest[range.upperBound...]
        }
        return count
    }
}
