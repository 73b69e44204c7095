fn main() -> std::process::ExitCode {
    pbxsync::cli::main()
}
