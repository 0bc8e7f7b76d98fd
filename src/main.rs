fn main() -> std::process::ExitCode {
    maskscape::cli::main()
}
