// swift-tools-version: 6.1
import Foundation
import PackageDescription

// A package found by path is known by its directory's name: whatever the clone is called.
let service = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent.lowercased()

// Not part of the service's build: `scripts/bench` builds `bare-server` from here, and
// `swift package --package-path Benchmarks benchmark` runs the microbenchmarks.
let package = Package(
    name: "notifications-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // The yardstick: a bare Hummingbird 2 server returning a fixed body of a given size.
        .executableTarget(
            name: "BareServer",
            dependencies: [.product(name: "Hummingbird", package: "hummingbird")]
        ),
        .executableTarget(
            name: "Microbenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "NotificationsModules", package: service),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/Microbenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
