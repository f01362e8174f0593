//! The load harness's parsers (package ledger-bench, whose library has no test target of its
//! own: building one would compile the harness a second time, and criterion with it, for
//! these three checks).

use ledger_bench::cpu::stat_ticks;
use ledger_bench::env::with_database;
use ledger_bench::pgbench::tps;

#[test]
fn reads_the_tps_of_pgbench_15_and_of_older_reports() {
    let v15 = "number of failed transactions: 0 (0.000%)\nlatency average = 4.065 ms\n\
               initial connection time = 229.027 ms\n\
               tps = 15742.316645 (without initial connection time)\n";
    assert_eq!(tps(v15), Some(15742.316645));
    let old = "tps = 900.5 (including connections establishing)\n\
               tps = 912.25 (excluding connections establishing)\n";
    assert_eq!(tps(old), Some(912.25));
    assert_eq!(tps("no figures"), None);
}

#[test]
fn database_names_are_replaced_in_urls() {
    assert_eq!(
        with_database("postgres://u@h:5432/ledger", "x"),
        "postgres://u@h:5432/x"
    );
    assert_eq!(
        with_database("postgres://u@h/ledger?sslmode=disable", "x"),
        "postgres://u@h/x?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://u@h:5432", "x"),
        "postgres://u@h:5432/x"
    );
}

#[test]
fn stat_lines_with_odd_thread_names_parse() {
    let line = "42 (bench-load (x)) S 1 2 3 4 5 6 7 8 9 10 17 25 0 0 20 0 1 0";
    assert_eq!(stat_ticks(line), Some(("bench-load (x)".to_owned(), 42)));
}
