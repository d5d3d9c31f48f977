import ArgumentParser

@main
struct Hangar: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hangar",
        abstract: "Run one isolated, stateful process per key.",
        subcommands: [
            Run.self, PolicyCommand.self, DoctorCommand.self, DroneCommand.self, ControllerCommand.self, ProxyCommand.self, DevCommand.self, WebSocketCommand.self,
            ConnectCommand.self, StatusCommand.self, TerminateCommand.self, DrainCommand.self, ClusterCommand.self,
            Bench.self,
        ]
    )
}
