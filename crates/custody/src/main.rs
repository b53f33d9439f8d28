// mimalloc: the relay path allocates many small, short-lived values per message; this
// allocator serves them with less CPU and contention than the system one.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    custody::cli::main()
}
