// swift-tools-version:6.0
import PackageDescription

let strictness: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "hangar",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "hangar", targets: ["hangar"]),
        .executable(name: "hangar-init", targets: ["hangar-init"]),
        .executable(name: "hangar-attack", targets: ["hangar-attack"]),
        .library(name: "HangarSandbox", targets: ["HangarSandbox"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", exact: "0.6.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", from: "2.8.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
    ],
    targets: [
        .target(
            name: "CShims",
            path: "CShims",
            exclude: ["init"],
            // -fno-builtin: no loop may become a libc call in the child between clone and exec.
            cSettings: [.unsafeFlags(["-Wall", "-Wextra", "-Werror", "-fno-stack-protector", "-fno-builtin"])],
            linkerSettings: [.linkedLibrary("seccomp"), .linkedLibrary("cap"), .linkedLibrary("crypto")]
        ),
        .executableTarget(
            name: "hangar-init",
            path: "CShims/init",
            // Freestanding: its own _start, no libc start-up (see hangar-init.c).
            cSettings: [
                .unsafeFlags(["-Wall", "-Wextra", "-Werror", "-ffreestanding", "-fno-builtin", "-fno-stack-protector"])
            ],
            linkerSettings: [.unsafeFlags(["-static-executable", "-Xclang-linker", "-nostdlib"])]
        ),
        // Hostile code for the isolation suite; refuses to run unless confined (Attacks/).
        .executableTarget(
            name: "hangar-attack",
            path: "Attacks",
            cSettings: [.unsafeFlags(["-Wall", "-Wextra", "-Werror", "-Wno-unused-result"])],
            linkerSettings: [.unsafeFlags(["-static-executable"])]
        ),
        .target(
            name: "HangarCore",
            dependencies: ["CShims", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictness
        ),
        .target(
            name: "HangarSandbox",
            dependencies: [
                "CShims", "HangarCore",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictness
        ),
        .target(
            name: "HangarPolicy",
            dependencies: ["HangarCore", "HangarSandbox", .product(name: "TOMLKit", package: "TOMLKit")],
            swiftSettings: strictness
        ),
        .target(
            name: "HangarDrone",
            dependencies: [
                "CShims", "HangarCore", "HangarSandbox", "HangarPolicy",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
            ],
            swiftSettings: strictness
        ),
        // The controller's store: one protocol, SQLite (GRDB over the system libsqlite3) embedded.
        .target(
            name: "HangarStore",
            dependencies: ["HangarCore", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: strictness
        ),
        // The controller: the public API, scheduling, leases, the drone and proxy sockets.
        .target(
            name: "HangarController",
            dependencies: [
                "HangarCore", "HangarStore", "HangarPolicy",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strictness
        ),
        // The proxy: strict request heads, routes from the controller, splice forwarding.
        .target(
            name: "HangarProxy",
            dependencies: [
                "CShims", "HangarCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictness
        ),
        // An async client for the controller's API (the CLI, tests, users).
        .target(
            name: "HangarClient",
            dependencies: [
                "HangarCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strictness
        ),
        .target(
            name: "HangarDoctor",
            dependencies: ["CShims", "HangarCore", "HangarSandbox", "HangarPolicy"],
            swiftSettings: strictness
        ),
        .executableTarget(
            name: "hangar",
            dependencies: [
                "HangarCore", "HangarSandbox", "HangarPolicy", "HangarDoctor", "HangarDrone", "HangarStore",
                "HangarController", "HangarClient", "HangarProxy",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictness
        ),
        // The cgroup v2 checks that run inside a QEMU guest (scripts/qemu-v2-test.sh).
        .executableTarget(
            name: "hangar-guest-check",
            dependencies: ["HangarSandbox", "HangarCore", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictness
        ),
        .target(
            name: "HangarTestSupport",
            dependencies: ["CShims", "HangarCore", "HangarSandbox"],
            path: "Tests/HangarTestSupport",
            swiftSettings: strictness
        ),
        .testTarget(
            name: "HangarCoreTests", dependencies: ["HangarCore", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictness),
        .testTarget(name: "HangarStoreTests", dependencies: ["HangarStore", "HangarCore"], swiftSettings: strictness),
        .testTarget(
            name: "HangarProxyTests",
            dependencies: [
                "HangarProxy", "HangarClient", "HangarCore", "HangarSandbox", "CShims", "HangarTestSupport", .target(name: "hangar"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictness
        ),
        .testTarget(
            name: "HangarPolicyTests",
            dependencies: ["HangarPolicy", "HangarSandbox", "HangarCore", "HangarTestSupport"],
            exclude: ["Corpus"],
            swiftSettings: strictness
        ),
        .testTarget(
            name: "HangarCLITests",
            dependencies: ["HangarSandbox", "HangarTestSupport", .target(name: "hangar")],
            swiftSettings: strictness
        ),
        .testTarget(
            name: "HangarDroneTests",
            dependencies: [
                "HangarDrone", "HangarPolicy", "HangarSandbox", "HangarCore", "HangarTestSupport",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictness
        ),
        .testTarget(
            name: "HangarControllerTests",
            dependencies: [
                "HangarClient", "HangarController", "HangarCore", "HangarTestSupport", .target(name: "hangar"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictness
        ),
        .testTarget(
            name: "HangarDoctorTests",
            dependencies: [
                "HangarDoctor", "HangarPolicy", "HangarSandbox", "HangarCore", "HangarTestSupport",
                .target(name: "hangar-attack"),
            ],
            swiftSettings: strictness
        ),
        .testTarget(
            name: "HangarSandboxTests",
            dependencies: ["HangarSandbox", "HangarCore", "HangarTestSupport"],
            swiftSettings: strictness
        ),
    ]
)
