#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The composition root: the one place that puts the apps (`src/apps/`) into the runtime.
fn main() -> std::process::ExitCode {
    weir::cli::main_with(weir::stages::Registry::with_apps())
}
