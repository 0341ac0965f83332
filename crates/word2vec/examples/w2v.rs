//! Stand-alone front end for the word2vec commands (the same code as `pretext word2vec ...`).
//!
//! `cargo run --release -p pretext-word2vec --example w2v -- train --corpus text.txt --out v.bin`

use clap::Parser;
use pretext_word2vec::Word2VecCommand;

#[derive(Parser)]
#[command(name = "w2v", about = "Word2Vec: train, similar, analogy, eval")]
struct Cli {
    /// Print one JSON object on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Word2VecCommand,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = pretext_word2vec::run(cli.cmd, cli.json) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
