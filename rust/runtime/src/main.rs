//! `vimigrate-runtime`: an OCI runtime for dockerd that is runc, plus vimigrate's direct
//! migration path (see the library's documentation).

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some(vimigrate_runtime::net::prepared_netns::HOLDER_ARG) {
        std::process::exit(vimigrate_runtime::net::prepared_netns::hold());
    }
    let invocation = vimigrate_runtime::runc::args::Invocation::parse(&argv);
    std::process::exit(vimigrate_runtime::run(&invocation));
}
