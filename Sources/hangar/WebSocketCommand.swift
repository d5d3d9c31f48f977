import ArgumentParser
import Glibc
import HummingbirdWSClient
import Logging
import NIOCore
import NIOWebSocket

/// `hangar ws URL`: a WebSocket session from the terminal (each line sent as a text
/// message, each message received printed), for trying a backend through the proxy.
struct WebSocketCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ws",
        abstract: "Open a WebSocket: send each line of standard input as a text message, print each message received.",
        discussion: "An http(s) URL is opened as ws(s). The session ends at the end of input or when the server closes.")

    @Argument(help: ArgumentHelp("The URL (ws, wss, http or https).", valueName: "url"))
    var url: String

    func validate() throws {
        guard ["ws://", "wss://", "http://", "https://"].contains(where: url.hasPrefix) else {
            throw ValidationError("the URL must start with ws://, wss://, http:// or https://, got \"\(url.prefix(64))\"")
        }
    }

    func run() async throws {
        var target = url
        if target.hasPrefix("http") { target = "ws" + target.dropFirst(4) }
        do {
            try await WebSocketClient.connect(
                url: target, configuration: .init(maxFrameSize: 1 << 24), logger: Logger(label: "hangar.ws")
            ) { inbound, outbound, _ in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for try await message in inbound.messages(maxSize: 1 << 24) {
                            switch message {
                            case .text(let text): print(text)
                            case .binary(let bytes): print("(\(bytes.readableBytes) binary bytes)")
                            }
                        }
                    }
                    group.addTask {
                        while let line = readLine() { try await outbound.write(.text(line)) }
                        try await outbound.close(.normalClosure, reason: nil)
                    }
                    try await group.next()
                    group.cancelAll()
                }
            }
        } catch {
            FileHandleStandardError.write("hangar ws: \(error)\n")
            throw ExitCode(1)
        }
    }
}
