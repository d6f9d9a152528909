//! The matcher's tests: the language, units, networks, the search and its
//! bounds, explanations, and properties over random facts and specs.

use super::*;
use proptest::prelude::*;
use std::time::{Duration, Instant};

const NO_LIMIT: usize = usize::MAX;

fn facts(list: &[[&str; 4]]) -> Facts {
    Facts::new(
        list.iter()
            .map(|f| Fact::new(f[0], f[1], f[2], f[3]))
            .collect(),
    )
}

fn specs(list: &[[&str; 4]]) -> SpecSet {
    match SpecSet::parse(list) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

fn find(s: &[[&str; 4]], f: &[[&str; 4]]) -> Option<Match> {
    matches(&specs(s), &facts(f), DEFAULT_STEP_LIMIT).expect("within the step limit")
}

fn is_match(s: &[[&str; 4]], f: &[[&str; 4]]) -> bool {
    find(s, f).is_some()
}

/// Whether the single value pattern accepts the value.
fn value_ok(pattern: &str, value: &str) -> bool {
    is_match(&[["c", "t", "k", pattern]], &[["c", "t", "k", value]])
}

fn parse_error(pattern: &str) -> String {
    match SpecSet::parse(&[["c", "t", "k", pattern]]) {
        Ok(_) => panic!("{pattern:?} should not parse"),
        Err(e) => e.to_string(),
    }
}

fn why(s: &[[&str; 4]], f: &[[&str; 4]]) -> Explanation {
    explain(&specs(s), &facts(f), DEFAULT_STEP_LIMIT)
        .expect("within the step limit")
        .expect("an explanation")
}

// -- literals and variables ---------------------------------------------

#[test]
fn literal_fields_compare_exactly() {
    let inv = [["system", "product", "vendor", "HP"]];
    assert!(is_match(&[["system", "product", "vendor", "HP"]], &inv));
    assert!(!is_match(&[["system", "product", "vendor", "hp"]], &inv));
    assert!(!is_match(&[["system", "product", "vendor", "HP "]], &inv));
    assert!(!is_match(&[["system", "product", "name", "HP"]], &inv));
}

#[test]
fn empty_spec_set_matches_anything() {
    let m = find(&[], &[["a", "b", "c", "d"]]).expect("match");
    assert!(m.bindings.is_empty() && m.facts.is_empty());
    assert!(is_match(&[], &[]));
}

#[test]
fn facts_no_spec_mentions_are_ignored() {
    let inv = [
        ["disk", "sda", "size", "300"],
        ["cpu", "physical", "number", "2"],
        ["system", "product", "vendor", "HP"],
    ];
    assert!(is_match(&[["cpu", "physical", "number", "2"]], &inv));
}

#[test]
fn variable_captures_and_must_agree_across_specs() {
    let inv = [
        ["network", "eth0", "ipv4", "10.0.0.5"],
        ["network", "eth0", "serial", "aa:aa"],
        ["network", "eth1", "ipv4", "192.168.1.5"],
        ["network", "eth1", "serial", "bb:bb"],
    ];
    let m = find(
        &[
            ["network", "$eth", "ipv4", "192.168.1.5"],
            ["network", "$eth", "serial", "$mac"],
        ],
        &inv,
    )
    .expect("match");
    assert_eq!(m.bindings["eth"], "eth1");
    assert_eq!(m.bindings["mac"], "bb:bb");
    assert_eq!(m.facts, vec![2, 3]);

    // Same variable, values that never agree.
    assert!(!is_match(
        &[
            ["network", "$eth", "ipv4", "10.0.0.5"],
            ["network", "$eth", "serial", "bb:bb"],
        ],
        &inv
    ));
    // Two names may hold the same text.
    let m = find(
        &[
            ["network", "$a", "ipv4", "10.0.0.5"],
            ["network", "$b", "serial", "aa:aa"],
        ],
        &inv,
    )
    .expect("match");
    assert_eq!(m.bindings["a"], m.bindings["b"]);
}

#[test]
fn variable_repeated_inside_one_spec() {
    let inv = [["x", "a", "b", "1"], ["x", "same", "same", "2"]];
    let m = find(&[["x", "$v", "$v", "$n"]], &inv).expect("match");
    assert_eq!(m.bindings["v"], "same");
    assert_eq!(m.bindings["n"], "2");
}

#[test]
fn variable_in_key_position() {
    let inv = [
        ["cpu", "physical_0", "cores", "8"],
        ["cpu", "physical_0", "threads", "16"],
        ["cpu", "physical_1", "threads", "16"],
    ];
    let m = find(
        &[
            ["cpu", "physical_0", "$k", "16"],
            ["cpu", "physical_1", "$k", "$n"],
        ],
        &inv,
    )
    .expect("match");
    assert_eq!(m.bindings["k"], "threads");
    assert_eq!(m.bindings["n"], "16");
    // Captured in the key of one spec, required in the key of another.
    assert!(!is_match(
        &[
            ["cpu", "physical_0", "$k", "8"],
            ["cpu", "physical_1", "$k", "$n"]
        ],
        &inv
    ));
}

#[test]
fn variable_in_class_and_type_positions() {
    let inv = [["disk", "sda", "size", "300"], ["sda", "disk", "size", "1"]];
    let m = find(
        &[["$c", "$t", "size", "1"], ["$t", "$c", "size", "$s"]],
        &inv,
    )
    .expect("match");
    assert_eq!(m.bindings["c"], "sda");
    assert_eq!(m.bindings["s"], "300");
}

#[test]
fn double_dollar_marks_cmdb_keys() {
    let inv = [
        ["network", "eth0", "serial", "52:54:00:aa:bb:cc"],
        ["system", "product", "serial", "CZ3404YWNN"],
    ];
    let s = specs(&[
        ["network", "$eth", "serial", "$$mac"],
        ["system", "product", "serial", "$serial"],
    ]);
    assert_eq!(s.cmdb_keys().iter().collect::<Vec<_>>(), ["mac"]);
    assert_eq!(s.variables(), ["eth", "mac", "serial"]);
    let m = matches(&s, &facts(&inv), DEFAULT_STEP_LIMIT)
        .unwrap()
        .unwrap();
    assert_eq!(m.cmdb_keys.iter().collect::<Vec<_>>(), ["mac"]);
    assert_eq!(
        m.cmdb_values(),
        BTreeMap::from([("mac", "52:54:00:aa:bb:cc")])
    );
    assert_eq!(m.bindings.len(), 3);
}

#[test]
fn single_and_double_dollar_name_the_same_variable() {
    let inv = [
        ["n", "eth0", "serial", "m0"],
        ["n", "eth0", "ipv4", "10.1.1.1"],
    ];
    let s = specs(&[
        ["n", "$eth", "serial", "$mac"],
        ["n", "$$eth", "ipv4", "$ip"],
    ]);
    assert_eq!(s.variables(), ["eth", "mac", "ip"]);
    assert!(s.cmdb_keys().contains("eth"));
    let m = matches(&s, &facts(&inv), 100).unwrap().unwrap();
    assert_eq!(m.cmdb_values(), BTreeMap::from([("eth", "eth0")]));
}

#[test]
fn capture_with_test() {
    let inv = [
        ["disk", "sda", "size", "100"],
        ["disk", "sdb", "size", "500"],
        ["disk", "sdc", "size", "1000"],
    ];
    let m = find(&[["disk", "$d", "size", "$size=ge(400)"]], &inv).expect("match");
    assert_eq!(m.bindings["d"], "sdb");
    assert_eq!(m.bindings["size"], "500");
    // An already bound variable must be equal and pass the test.
    assert!(!is_match(
        &[
            ["disk", "sda", "size", "$size"],
            ["disk", "$d", "size", "$size=ge(400)"]
        ],
        &inv
    ));
    let m = find(&[["disk", "$$d=regexp(^sd[bc]$)", "size", "gt(600)"]], &inv).expect("match");
    assert_eq!(m.bindings["d"], "sdc");
    assert!(m.cmdb_keys.contains("d"));
}

// -- functions -----------------------------------------------------------

#[test]
fn comparisons() {
    assert!(value_ok("gt(10)", "11"));
    assert!(!value_ok("gt(10)", "10"));
    assert!(value_ok("ge(10)", "10"));
    assert!(!value_ok("ge(10)", "9.999"));
    assert!(value_ok("lt(10)", "9.5"));
    assert!(!value_ok("lt(10)", "10"));
    assert!(value_ok("le(10)", "10.0"));
    assert!(!value_ok("le(10)", "10.000000001"));
    assert!(value_ok("gt(-5)", "-4"));
    assert!(value_ok("lt(0)", "-0.5"));
    assert!(value_ok("ge(3999.87)", "3999.88"));
    assert!(value_ok("gt( 1 )", " 2 "));
}

#[test]
fn ranges_include_both_bounds() {
    assert!(value_ok("range(30,50)", "30"));
    assert!(value_ok("range(30,50)", "50"));
    assert!(value_ok("range(30, 50)", "42.5"));
    assert!(!value_ok("range(30,50)", "29.99"));
    assert!(!value_ok("range(30,50)", "51"));
    assert!(value_ok("range(1GiB,2GiB)", "1.5GiB"));
    assert!(value_ok("range(5,5)", "5"));
}

#[test]
fn in_is_text_membership() {
    assert!(value_ok("in(SAS,SATA)", "SATA"));
    assert!(!value_ok("in(SAS,SATA)", "sata"));
    assert!(!value_ok("in(SAS,SATA)", "SAS "));
    assert!(value_ok("in(16)", "16"));
    assert!(!value_ok("in(16)", "16.0"));
    assert!(value_ok("in('NOT AVAILABLE', UNKNOWN)", "NOT AVAILABLE"));
    assert!(value_ok("in('', x)", ""));
}

#[test]
fn regexp_is_an_unanchored_search() {
    let name = "ProLiant BL460c Gen8 (641016-B21)";
    assert!(value_ok("regexp(BL460c)", name));
    assert!(value_ok("regexp(BL460c Gen[89])", name));
    assert!(!value_ok("regexp(^BL460c)", name));
    assert!(value_ok("regexp(^ProLiant)", name));
    assert!(!value_ok("regexp(bl460c)", name));
    assert!(value_ok("regexp(bl460c, i)", name));
    assert!(value_ok("regexp('\\(641016-B21\\)$')", name));
    assert!(value_ok("regexp(^(sda|sdb)$)", "sdb"));
    assert!(!value_ok("regexp(^(sda|sdb)$)", "sdc"));
}

#[test]
fn regexp_arguments_with_commas_and_parentheses_are_quoted() {
    assert!(value_ok("regexp('^a,b$')", "a,b"));
    assert!(value_ok("regexp(\"^a,b$\")", "a,b"));
    assert!(!value_ok("regexp('^a,b$')", "a"));
    assert!(value_ok("regexp('^x\\)+$')", "x)))"));
    assert!(value_ok("regexp('^\\d+ GB$')", "300 GB"));
    assert!(value_ok("regexp('it''s')", "it's"));
    assert!(value_ok("regexp(\"say \"\"hi\"\"\")", "say \"hi\""));
    assert!(value_ok("regexp(' lead')", "a lead"));
    assert!(!value_ok("regexp(' lead')", "alead"));
    // Unquoted, the comma separates arguments and `b$` is not a flag.
    assert!(parse_error("regexp(^a,b$)").contains("unknown regexp flag 'b$'"));
}

#[test]
fn network_ipv4() {
    assert!(value_ok("network(10.29.99.0/24)", "10.29.99.30"));
    assert!(!value_ok("network(10.29.99.0/24)", "10.29.98.30"));
    assert!(value_ok("network(10.0.0.0/8)", "10.255.1.2"));
    assert!(value_ok("network(0.0.0.0/0)", "192.168.1.1"));
    assert!(value_ok("network(10.29.99.30/32)", "10.29.99.30"));
    assert!(value_ok("network(10.29.99.30)", "10.29.99.30"));
    assert!(!value_ok("network(10.29.99.30)", "10.29.99.31"));
    // Host bits in the network are ignored; a prefix on the value too.
    assert!(value_ok("network(10.29.99.30/24)", "10.29.99.1"));
    assert!(value_ok("network(10.29.99.0/24)", "10.29.99.7/24"));
    // IPv4-mapped IPv6 addresses belong to IPv4 networks.
    assert!(value_ok("network(10.0.0.0/8)", "::ffff:10.1.2.3"));
    assert!(!value_ok("network(10.0.0.0/8)", "2001:db8::1"));
    assert!(!value_ok("network(10.0.0.0/8)", "not an address"));
    assert!(!value_ok("network(10.0.0.0/8)", ""));
}

#[test]
fn network_ipv6() {
    assert!(value_ok("network(2001:db8::/32)", "2001:db8:0:1::5"));
    assert!(value_ok("network(2001:DB8::/32)", "2001:0db8::1"));
    assert!(!value_ok("network(2001:db8::/32)", "2001:db9::1"));
    assert!(value_ok("network(fe80::/10)", "fe80::1%eth0"));
    assert!(value_ok("network(fe80::/10)", "febf::1"));
    assert!(!value_ok("network(fe80::/10)", "fec0::1"));
    assert!(value_ok("network(2001:db8::/32)", "[2001:db8::1]"));
    assert!(value_ok("network(2001:db8::/32)", "2001:db8::1/64"));
    assert!(value_ok("network(::/0)", "::1"));
    assert!(value_ok("network(::1/128)", "::1"));
    assert!(!value_ok("network(::1/128)", "::2"));
    assert!(!value_ok("network(2001:db8::/32)", "10.0.0.1"));
}

#[test]
fn combinators() {
    assert!(value_ok("not(HP)", "Dell"));
    assert!(!value_ok("not(HP)", "HP"));
    assert!(value_ok("or(SAS,SATA)", "SAS"));
    assert!(!value_ok("or(SAS,SATA)", "NVMe"));
    assert!(value_ok("and(gt(1),lt(3))", "2"));
    assert!(!value_ok("and(gt(1),lt(3))", "3"));
    assert!(value_ok("or(lt(1),gt(3),in(2))", "2"));
    assert!(value_ok("not(in(UNKNOWN,'NOT AVAILABLE'))", "HP"));
    assert!(!value_ok(
        "not(in(UNKNOWN,'NOT AVAILABLE'))",
        "NOT AVAILABLE"
    ));
    assert!(value_ok("and(regexp(^eth), not(eth0))", "eth1"));
    assert!(!value_ok("and(regexp(^eth), not(eth0))", "eth0"));
}

#[test]
fn nested_arguments_parse_properly() {
    assert!(value_ok("and(range(30,50),gt(1))", "40"));
    assert!(!value_ok("and(range(30,50),gt(1))", "60"));
    assert!(value_ok("and(range(30,50),not(40))", "41"));
    assert!(!value_ok("and(range(30,50),not(40))", "40"));
    let deep = "or(and(ge(1GiB),le(2GiB),not(or(in(1.5GiB),regexp('^1,5')))),network(10.0.0.0/8))";
    assert!(value_ok(deep, "1GiB"));
    assert!(!value_ok(deep, "1.5GiB"));
    assert!(!value_ok(deep, "1,5"));
    assert!(value_ok(deep, "10.1.1.1"));
    assert!(!value_ok(deep, "3GiB"));
    assert!(value_ok(
        "  and( range( 30 , 50 ) , gt( 1 ) )  ".trim_start(),
        "31"
    ));
    let deepest = format!("{}1{}", "not(".repeat(32), ")".repeat(32));
    assert!(value_ok(&deepest, "1"));
    assert!(!value_ok(&deepest, "2"));
}

#[test]
fn tests_work_in_every_field() {
    let inv = [
        ["disk", "sda", "size", "300"],
        ["disk", "nvme0n1", "size", "300"],
    ];
    let m = find(
        &[["regexp(^d)", "$d=regexp(^nvme)", "in(size)", "ge(1)"]],
        &inv,
    )
    .expect("match");
    assert_eq!(m.bindings["d"], "nvme0n1");
    assert!(is_match(&[["disk", "sda", "$k=not(vendor)", "300"]], &inv));
    // Numeric tests on other fields read those fields as numbers.
    assert!(is_match(
        &[["n", "gt(2)", "k", "v"]],
        &[["n", "3", "k", "v"]]
    ));
}

// -- numbers and sizes ----------------------------------------------------

#[test]
fn size_units_in_tests() {
    assert!(value_ok("ge(64GiB)", "68719476736"));
    assert!(!value_ok("ge(64GiB)", "68719476735"));
    assert!(value_ok("gt(100GB)", "100000000001"));
    assert!(!value_ok("gt(100GB)", "100000000000"));
    assert!(value_ok("le(512MiB)", "536870912"));
    assert!(!value_ok("le(512MiB)", "536870913"));
    assert!(value_ok("ge(1.5TB)", "1500000000000"));
    assert!(!value_ok("ge(1.5TB)", "1499999999999"));
    assert!(value_ok("ge(1KB)", "1000") && !value_ok("ge(1KB)", "999"));
    assert!(value_ok("ge(1KiB)", "1024") && !value_ok("ge(1KiB)", "1023"));
    assert!(value_ok("ge(1MB)", "1000000"));
    assert!(value_ok("ge(1PB)", "1000000000000000"));
    assert!(value_ok("ge(1PiB)", "1125899906842624"));
    assert!(!value_ok("ge(1PiB)", "1125899906842623"));
    assert!(value_ok("ge(1TiB)", "1099511627776"));
    assert!(value_ok("ge(2B)", "2"));
    // Unit letters in any case, with or without a space.
    assert!(value_ok("ge(64gib)", "68719476736"));
    assert!(value_ok("ge(64 GIB)", "68719476736"));
    assert!(value_ok("ge(100gb)", "100000000000"));
}

#[test]
fn size_units_in_values() {
    assert!(value_ok("ge(32GB)", "32GB"));
    assert!(value_ok("ge(32GB)", "32 GB"));
    assert!(!value_ok("ge(32GiB)", "32GB"));
    assert!(value_ok("ge(32GB)", "32GiB"));
    assert!(value_ok("gt(30000000000)", "32gb"));
    assert!(value_ok("range(1TB,2TB)", "1.5 TB"));
    assert!(value_ok("lt(1GiB)", "1023MiB"));
    assert!(value_ok("ge(64GiB)", "65536 MiB"));
}

#[test]
fn number_parsing() {
    let n = |s: &str| parse_number(s).map(|(n, _)| n.0);
    assert_eq!(n("42"), Some(42 * NUM_SCALE));
    assert_eq!(n("-1.5"), Some(-15 * NUM_SCALE / 10));
    assert_eq!(n("+.5"), Some(NUM_SCALE / 2));
    assert_eq!(n("5."), Some(5 * NUM_SCALE));
    assert_eq!(n("1KiB"), Some(1024 * NUM_SCALE));
    assert_eq!(n("0.000000001"), Some(1));
    assert_eq!(n("0.0000000019"), Some(1));
    for bad in [
        "", " ", "-", ".", "abc", "1e9", "0x10", "1,000", "1.2.3", "12 34", "5K", "5 KiBs",
        "40GB/s", "9c:b6:54", "1I:1:1", "NaN", "inf", "--1", "5éb", "5é", "5 ébb", "1\u{0}B",
    ] {
        assert_eq!(n(bad), None, "{bad:?}");
    }
    // Far too large numbers are not numbers, and do not overflow.
    assert_eq!(n("999999999999999999999999999999999999999"), None);
    assert_eq!(n("99999999999999999999999999PiB"), None);
    assert_eq!(n("18446744073709551615PiB"), None);
    assert!(n("18446744073709551615GiB").is_some());
    assert_eq!(n("18446744073709551616"), None);
    assert!(n("18446744073709551615").is_some());
}

#[test]
fn non_numeric_value_under_numeric_test_simply_does_not_match() {
    for value in ["SAS", "40GB/s", "n/a", "", "12 cores", "1e3"] {
        for test in ["gt(10)", "ge(1GiB)", "lt(10)", "le(10)", "range(0,100)"] {
            assert!(!value_ok(test, value), "{test} on {value:?}");
        }
    }
    // A non-numeric fact does not stop the search: another fact matches.
    let inv = [
        ["disk", "sda", "size", "unknown"],
        ["disk", "sdb", "size", "40GB"],
        ["disk", "sdc", "size", "500"],
    ];
    let m = find(
        &[
            ["disk", "$d", "size", "gt(10)"],
            ["disk", "$e", "size", "gt(100)"],
        ],
        &inv,
    )
    .expect("match");
    assert_eq!(
        (m.bindings["d"].as_str(), m.bindings["e"].as_str()),
        ("sdb", "sdc")
    );
    // Plain boolean logic: a non-number is not greater than 10.
    assert!(value_ok("not(gt(10))", "SAS"));
}

// -- hardware values are data ---------------------------------------------

#[test]
fn hardware_values_are_never_evaluated() {
    let inv = [["x", "y", "z", "gt(1)"]];
    // The spec is a test; the value is not a number.
    assert!(!is_match(&[["x", "y", "z", "gt(1)"]], &inv));
    // Matching the text needs in() or a variable.
    assert!(is_match(&[["x", "y", "z", "in('gt(1)')"]], &inv));
    let m = find(&[["x", "y", "z", "$v"]], &inv).expect("match");
    assert_eq!(m.bindings["v"], "gt(1)");
    // Values looking like variables, functions or regexes stay text.
    for value in [
        "$x",
        "$$x",
        "$x=gt(0)",
        "regexp(.*)",
        "and(gt(0),lt(2))",
        ".*",
    ] {
        assert!(!value_ok("foo", value), "{value}");
        assert!(value_ok("$v", value), "{value}");
        assert!(value_ok(&format!("in('{value}')"), value), "{value}");
    }
    // A bound variable compares text, never evaluates it.
    let inv = [["a", "1", "k", "gt(0)"], ["b", "1", "k", "5"]];
    assert!(!is_match(
        &[["a", "1", "k", "$v"], ["b", "1", "k", "$v"]],
        &inv
    ));
}

#[test]
fn literals_that_look_like_calls() {
    let cpu = "Intel(R) Xeon(R) CPU E5-2650 0 @ 2.00GHz";
    assert!(value_ok(cpu, cpu));
    assert!(value_ok(
        "ProLiant BL460c Gen8 (641016-B21)",
        "ProLiant BL460c Gen8 (641016-B21)"
    ));
    assert!(value_ok("(x)", "(x)"));
    assert!(value_ok("in('Foo(1)')", "Foo(1)"));
    assert!(parse_error("Foo(1)").contains("unknown function 'Foo'"));
}

// -- search -----------------------------------------------------------------

#[test]
fn each_spec_consumes_its_own_fact() {
    let one = [["disk", "sda", "type", "SSD"]];
    let two = [
        ["disk", "sda", "type", "SSD"],
        ["disk", "sdb", "type", "SSD"],
    ];
    let same = [["disk", "$a", "type", "SSD"], ["disk", "$b", "type", "SSD"]];
    assert!(!is_match(&same, &one));
    let m = find(&same, &two).expect("match");
    assert_ne!(m.facts[0], m.facts[1]);
    assert_ne!(m.bindings["a"], m.bindings["b"]);
    // Identical literal specs need identical facts.
    let lit = [
        ["disk", "sda", "type", "SSD"],
        ["disk", "sda", "type", "SSD"],
    ];
    assert!(!is_match(&lit, &one));
    assert!(is_match(&lit, &[one[0], one[0]]));
    // A shared variable cannot use the same fact twice either.
    let shared = [["disk", "$d", "type", "SSD"], ["disk", "$d", "type", "SSD"]];
    assert!(!is_match(&shared, &two));
}

#[test]
fn backtracks_when_the_first_choice_fails_later() {
    let inv = [
        ["disk", "sda", "size", "300"],
        ["disk", "sda", "type", "HDD"],
        ["disk", "sdb", "size", "300"],
        ["disk", "sdb", "type", "SSD"],
        ["disk", "sdc", "size", "50"],
        ["disk", "sdc", "type", "NVMe"],
    ];
    let s = specs(&[
        ["disk", "$d", "size", "ge(100)"],
        ["disk", "$d", "type", "or(SSD,NVMe)"],
    ]);
    let f = facts(&inv);
    let candidates = Candidates::collect(&s, &f);
    let mut search = Search::new(&s, &f, &candidates, 2, NO_LIMIT);
    assert!(search.run().unwrap());
    let m = search.to_match();
    assert_eq!(m.bindings["d"], "sdb");
    assert_eq!(m.facts, vec![2, 3]);
    // sda was tried first and given up.
    assert!(search.steps > 2, "steps {}", search.steps);
}

#[test]
fn backtracks_over_consumed_facts() {
    // The first spec's first choice is the only fact the second can use.
    let inv = [
        ["net", "eth0", "speed", "10000"],
        ["net", "eth1", "speed", "1000"],
        ["net", "eth2", "speed", "10000"],
    ];
    let m = find(
        &[
            ["net", "$a", "speed", "ge(1000)"],
            ["net", "$b", "speed", "ge(10000)"],
            ["net", "$c", "speed", "ge(10000)"],
        ],
        &inv,
    )
    .expect("match");
    assert_eq!(m.bindings["a"], "eth1");
    let mut used = m.facts.clone();
    used.sort_unstable();
    assert_eq!(used, vec![0, 1, 2]);
}

#[test]
fn literal_spec_takes_the_exactly_equal_fact() {
    let inv = [
        ["disk", "sda", "type", "SAS"],
        ["disk", "sdb", "type", "SATA"],
    ];
    let m = find(
        &[
            ["disk", "$d", "type", "in(SAS,SATA)"],
            ["disk", "sda", "type", "SAS"],
        ],
        &inv,
    )
    .expect("match");
    assert_eq!(m.facts, vec![1, 0]);
}

#[test]
fn interchangeable_specs_do_not_explode() {
    // 40 identical `$x` specs (plus a private variable each) against 39
    // facts: interchangeable, so the search never tries their orders.
    let inv: Vec<Fact> = (0..39)
        .map(|i| Fact::new("f", format!("t{i}"), "k", "v"))
        .collect();
    let names: Vec<String> = (0..40).map(|i| format!("$t{i}")).collect();
    let spec_list: Vec<[&str; 4]> = names.iter().map(|n| ["f", n.as_str(), "k", "$x"]).collect();
    let s = specs(&spec_list);
    let f = Facts::new(inv);
    assert_eq!(matches(&s, &f, 1000), Ok(None));
    let s = specs(&spec_list[..39]);
    let m = matches(&s, &f, 1000)
        .unwrap()
        .expect("39 specs fit 39 facts");
    assert_eq!(m.bindings["x"], "v");
    // Same with truly identical specs sharing every variable.
    let same = specs(&vec![["f", "$t", "k", "$x"]; 30]);
    assert_eq!(matches(&same, &f, 100_000), Ok(None));
}

#[test]
fn independent_parts_are_solved_separately() {
    // 16 banks for 8 specs and a failing network pair: the banks are not
    // tried in every combination before giving up.
    let mut inv: Vec<Fact> = (0..16)
        .map(|i| Fact::new("memory", format!("bank:{i}"), "size", "17179869184"))
        .collect();
    inv.push(Fact::new("network", "eth0", "ipv4", "10.0.0.1"));
    inv.push(Fact::new("network", "eth0", "link", "no"));
    inv.push(Fact::new("network", "eth1", "link", "yes"));
    let mut list: Vec<[String; 4]> = (0..8)
        .map(|i| {
            [
                "memory".into(),
                format!("$b{i}"),
                "size".into(),
                "ge(16GiB)".into(),
            ]
        })
        .collect();
    list.push([
        "network".into(),
        "$e".into(),
        "ipv4".into(),
        "network(10.0.0.0/8)".into(),
    ]);
    list.push([
        "network".into(),
        "$e".into(),
        "link".into(),
        "regexp(.)".into(),
    ]);
    list.push(["network".into(), "$e".into(), "link".into(), "yes".into()]);
    let s = SpecSet::parse(&list).unwrap();
    let f = Facts::new(inv);
    assert_eq!(matches(&s, &f, 1000), Ok(None));
}

#[test]
fn hostile_specs_trip_the_step_limit_quickly() {
    // Pairs (f $t_i k $x) / (g $t_i k 1): 13 pairs need 13 distinct
    // types, only 12 exist, and no two specs are interchangeable.
    let mut inv = Vec::new();
    for i in 0..12 {
        inv.push(Fact::new("f", format!("t{i}"), "k", "v"));
        inv.push(Fact::new("g", format!("t{i}"), "k", "1"));
    }
    let mut list: Vec<[String; 4]> = Vec::new();
    for i in 0..13 {
        list.push(["f".into(), format!("$t{i}"), "k".into(), "$x".into()]);
        list.push(["g".into(), format!("$t{i}"), "k".into(), "1".into()]);
    }
    let s = SpecSet::parse(&list).unwrap();
    let f = Facts::new(inv);
    let start = Instant::now();
    assert_eq!(
        matches(&s, &f, DEFAULT_STEP_LIMIT),
        Err(MatchError::SearchLimit {
            steps: DEFAULT_STEP_LIMIT
        })
    );
    assert_eq!(
        explain(&s, &f, DEFAULT_STEP_LIMIT),
        Err(MatchError::SearchLimit {
            steps: DEFAULT_STEP_LIMIT
        })
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        matches(&s, &f, 10),
        Err(MatchError::SearchLimit { steps: 10 })
    );
    assert!(
        MatchError::SearchLimit { steps: 10 }
            .to_string()
            .contains("gave up after 10 search steps")
    );
    // With one pair fewer it matches well within the limit.
    let s = SpecSet::parse(&list[..24]).unwrap();
    assert!(matches(&s, &f, DEFAULT_STEP_LIMIT).unwrap().is_some());
}

// -- parse errors ---------------------------------------------------------

#[test]
fn parse_errors_say_what_and_where() {
    let err = SpecSet::parse(&[
        ["memory", "total", "size", "ge(1)"],
        ["a", "b", "c", "d"],
        ["a", "b", "c", "d"],
        ["memory", "total", "ge(64GiB", "x"],
    ])
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "spec 4 field \"key\": unclosed '(' at column 3 in \"ge(64GiB\""
    );
    assert_eq!((err.spec, err.field, err.column), (3, 2, 3));
    assert_eq!(err.kind, SpecErrorKind::UnclosedParen);

    let deep = format!("{}1{}", "not(".repeat(40), ")".repeat(40));
    let cases = [
        ("rnage(1,2)", "unknown function 'rnage'", 1),
        ("GT(5)", "unknown function 'GT'", 1),
        ("and(gt(1),foo(2))", "unknown function 'foo'", 11),
        ("gt(1,2)", "gt() takes 1 argument but got 2", 1),
        ("gt()", "gt() takes 1 argument but got 0", 1),
        ("range(1)", "range() takes 2 arguments but got 1", 1),
        ("range(50,30)", "range lower bound is greater", 1),
        ("not(a,b)", "not() takes 1 argument but got 2", 1),
        (
            "and(gt(1))",
            "and() takes at least 2 arguments but got 1",
            1,
        ),
        ("or()", "or() takes at least 2 arguments but got 0", 1),
        ("in()", "in() takes at least 1 argument but got 0", 1),
        ("regexp()", "regexp() takes 1 or 2 arguments but got 0", 1),
        (
            "regexp(a,i,x)",
            "regexp() takes 1 or 2 arguments but got 3",
            1,
        ),
        ("regexp(a, x)", "unknown regexp flag 'x'", 11),
        (
            "regexp('(unclosed')",
            "bad regular expression: unclosed group",
            8,
        ),
        ("regexp(a[)", "bad regular expression", 8),
        ("network(10.0.0.0/33)", "bad network '10.0.0.0/33'", 9),
        ("network(10.0.0/8)", "bad network", 9),
        ("network(2001:db8::/129)", "bad network", 9),
        ("network(10.0.0.0/)", "bad network", 9),
        ("network(hello)", "bad network 'hello'", 9),
        ("gt(abc)", "bad number 'abc'", 4),
        ("ge(64 GiBs)", "bad number '64 GiBs'", 4),
        ("le(1e9)", "bad number '1e9'", 4),
        ("range(1, x)", "bad number 'x'", 10),
        ("in(a,,b)", "empty argument", 6),
        ("in('abc)", "unclosed quote", 4),
        ("in('a'b)", "unexpected 'b'", 7),
        ("gt(1))", "unexpected ')'", 6),
        ("gt(1) and more", "unexpected 'a'", 7),
        ("and(gt(1),lt(2)", "unclosed '('", 4),
        ("and(range(30,50),gt(1)", "unclosed '('", 4),
        ("$", "expected a variable name", 2),
        ("$$", "expected a variable name", 3),
        ("$-x", "expected a variable name", 2),
        ("$x=", "expected a function after '='", 4),
        ("$x=HP", "expected a function after '='", 4),
        ("$x=gt(", "unclosed '('", 6),
        ("$x y", "unexpected 'y'", 4),
        ("$x-y", "unexpected '-'", 3),
        (deep.as_str(), "functions nested more than 32 deep", 129),
    ];
    for (pattern, message, column) in cases {
        let err = SpecSet::parse(&[["c", "t", "k", pattern]]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(message), "{pattern:?}: {text}");
        assert!(
            text.starts_with("spec 1 field \"value\": "),
            "{pattern:?}: {text}"
        );
        assert_eq!(err.column, column, "{pattern:?}: {text}");
        assert!(text.ends_with(&format!("in {pattern:?}")), "{text}");
    }
}

#[test]
fn parse_error_columns_count_characters() {
    let err = SpecSet::parse(&[["c", "t", "k", "in('é', 'ü)"]]).unwrap_err();
    assert_eq!(err.kind, SpecErrorKind::UnclosedQuote);
    assert_eq!(err.column, 9);
    let err = SpecSet::parse(&[["c", "gt(x)", "k", "v"]]).unwrap_err();
    assert_eq!((err.field, err.column), (1, 4));
    assert!(
        err.to_string()
            .starts_with("spec 1 field \"type\": bad number 'x'")
    );
}

#[test]
fn compiled_specs_and_facts_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<SpecSet>();
    shareable::<Facts>();
    shareable::<Match>();
    shareable::<Explanation>();
}

#[test]
fn spec_set_keeps_its_source() {
    let s = specs(&[["a", "$b", "c", "ge(1)"], ["a", "x", "$$d", "in(1)"]]);
    assert_eq!(s.len(), 2);
    assert!(!s.is_empty());
    assert_eq!(s.source()[0], ["a", "$b", "c", "ge(1)"].map(String::from));
    assert!(SpecSet::parse::<&str>(&[]).unwrap().is_empty());
}

// -- explanations ----------------------------------------------------------

#[test]
fn explanation_names_the_spec_and_the_closest_fact() {
    let inv = [
        ["memory", "total", "size", "34359738368"],
        ["memory", "bank:0", "size", "17179869184"],
        ["cpu", "physical", "number", "2"],
    ];
    let specs_list = [
        ["cpu", "physical", "number", "ge(2)"],
        ["memory", "total", "size", "ge(64GiB)"],
    ];
    let e = why(&specs_list, &inv);
    assert_eq!(
        e.to_string(),
        "no fact satisfies ('memory','total','size','ge(64GiB)'); memory total size is 32 GiB"
    );
    assert_eq!(e.spec, 1);
    assert!(e.alone);
    assert_eq!(e.facts, vec![0]);
    assert_eq!(e.pattern, specs_list[1].map(String::from));
    assert!(
        explain(&specs(&specs_list[..1]), &facts(&inv), 100)
            .unwrap()
            .is_none()
    );
}

#[test]
fn explanation_shows_sizes_in_the_tests_unit() {
    let inv = [
        ["disk", "sda", "size", "250000000000"],
        ["disk", "sdb", "size", "1.5TiB"],
    ];
    let e = why(&[["disk", "$d", "size", "ge(2TB)"]], &inv);
    assert_eq!(
        e.message,
        "no fact satisfies ('disk','$d','size','ge(2TB)'); disk sda size is 250 GB; disk sdb size is 1.65 TB"
    );
    let e = why(&[["disk", "$d", "size", "gt(250000000000)"]], &inv[..1]);
    assert!(
        e.message.ends_with("disk sda size is 250000000000"),
        "{}",
        e.message
    );
}

#[test]
fn explanation_limits_closest_facts_and_says_when_nothing_is_close() {
    let inv: Vec<[String; 4]> = (0..5)
        .map(|i| {
            [
                "memory".into(),
                format!("bank:{i}"),
                "size".into(),
                "8GiB".into(),
            ]
        })
        .collect();
    let inv: Vec<[&str; 4]> = inv
        .iter()
        .map(|f| f.each_ref().map(String::as_str))
        .collect();
    let e = why(&[["memory", "$b", "size", "ge(16GiB)"]], &inv);
    assert_eq!(
        e.message,
        "no fact satisfies ('memory','$b','size','ge(16GiB)'); memory bank:0 size is 8 GiB; \
         memory bank:1 size is 8 GiB; memory bank:2 size is 8 GiB; and 2 more similar facts"
    );
    assert_eq!(e.facts.len(), 3);
    let e = why(&[["gpu", "$g", "model", "$m"]], &inv);
    assert_eq!(
        e.message,
        "no fact satisfies ('gpu','$g','model','$m'); nothing similar in the inventory"
    );
    assert!(e.facts.is_empty());
}

#[test]
fn explanation_of_specs_that_fail_together() {
    let inv = [
        ["disk", "sda", "size", "300"],
        ["disk", "sdb", "size", "299"],
        ["network", "eth0", "ipv4", "10.0.0.1"],
    ];
    let e = why(
        &[
            ["network", "$e", "ipv4", "$ip"],
            ["disk", "$d1", "size", "$s"],
            ["disk", "$d2", "size", "$s"],
        ],
        &inv,
    );
    assert_eq!(e.spec, 2);
    assert!(!e.alone);
    assert_eq!(
        e.message,
        "no fact satisfies ('disk','$d2','size','$s') once specs 1 to 2 are matched \
         (with $s='300'); facts that satisfy it alone: disk sda size is 300 (taken by spec 2); \
         disk sdb size is 299 ($s is '300')"
    );
    let e = why(
        &[
            ["disk", "$a", "size", "ge(299)"],
            ["disk", "$b", "size", "ge(299)"],
            ["disk", "$c", "size", "ge(1)"],
        ],
        &inv,
    );
    assert_eq!(e.spec, 2);
    assert_eq!(
        e.message,
        "no fact satisfies ('disk','$c','size','ge(1)') once specs 1 to 2 are matched; \
         facts that satisfy it alone: disk sda size is 300 (taken by spec 1); \
         disk sdb size is 299 (taken by spec 2)"
    );
}

#[test]
fn explanation_prefers_a_spec_no_fact_satisfies_alone() {
    let inv = [
        ["disk", "sda", "size", "300"],
        ["cpu", "physical", "number", "1"],
    ];
    let e = why(
        &[
            ["disk", "$a", "size", "300"],
            ["disk", "$b", "size", "300"],
            ["cpu", "physical", "number", "ge(2)"],
        ],
        &inv,
    );
    assert_eq!(e.spec, 2);
    assert_eq!(
        e.message,
        "no fact satisfies ('cpu','physical','number','ge(2)'); cpu physical number is 1"
    );
}

#[test]
fn explanation_serializes() {
    let e = why(&[["a", "b", "c", "d"]], &[["a", "b", "c", "e"]]);
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["spec"], 0);
    assert_eq!(json["pattern"], serde_json::json!(["a", "b", "c", "d"]));
    assert_eq!(
        json["message"],
        "no fact satisfies ('a','b','c','d'); a b c is e"
    );
    let back: Explanation = serde_json::from_value(json).unwrap();
    assert_eq!(back, e);
}

// -- serde ------------------------------------------------------------------

#[test]
fn facts_read_and_write_as_four_element_arrays() {
    let f: Fact = serde_json::from_str(r#"["memory","banks","count",16]"#).unwrap();
    assert_eq!(f, Fact::new("memory", "banks", "count", "16"));
    let f: Fact = serde_json::from_str(r#"["a","b","c",true]"#).unwrap();
    assert_eq!(f.value, "true");
    let f: Fact = serde_json::from_str(r#"["cpu","logical_0","bogomips",3999.88]"#).unwrap();
    assert_eq!(f.value, "3999.88");
    assert_eq!(
        serde_json::to_string(&Fact::new("a", "b", "c", "d")).unwrap(),
        r#"["a","b","c","d"]"#
    );
    for bad in [
        r#"["a","b","c"]"#,
        r#"["a","b","c","d","e"]"#,
        r#"["a","b","c",null]"#,
        r#"["a","b","c",["d"]]"#,
        r#"{"class":"a"}"#,
    ] {
        assert!(serde_json::from_str::<Fact>(bad).is_err(), "{bad}");
    }
}

#[test]
fn match_serializes() {
    let m = find(&[["a", "$x", "c", "$$y"]], &[["a", "b", "c", "d"]]).unwrap();
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"bindings": {"x": "b", "y": "d"}, "cmdb_keys": ["y"], "facts": [0]})
    );
}

// -- real inventories -------------------------------------------------------

macro_rules! fixtures {
    ($($n:literal),*) => {
        [$(($n, include_str!(concat!(
            "../../../tests/fixtures/hw-samples/hp-bl460c-gen8-", $n, ".json"
        )))),*]
    };
}

const FIXTURES: [(&str, &str); 19] = fixtures!(
    "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13", "14", "15", "16",
    "17", "18", "19"
);

fn fixture_facts() -> Vec<(&'static str, Facts)> {
    FIXTURES
        .iter()
        .map(|(name, json)| {
            let list: Vec<Fact> = serde_json::from_str(json).expect("fixture parses");
            (*name, Facts::new(list))
        })
        .collect()
}

fn matching_fixtures(list: &[[&str; 4]]) -> Vec<&'static str> {
    let s = specs(list);
    fixture_facts()
        .into_iter()
        .filter(|(_, f)| {
            matches(&s, f, DEFAULT_STEP_LIMIT)
                .expect("within limit")
                .is_some()
        })
        .map(|(name, _)| name)
        .collect()
}

const COMPUTE: [[&str; 4]; 10] = [
    ["system", "product", "vendor", "HP"],
    ["system", "product", "name", "regexp(BL460c Gen8)"],
    ["cpu", "physical", "number", "ge(2)"],
    ["cpu", "physical_0", "cores", "ge(8)"],
    ["memory", "$bank1", "size", "ge(16GiB)"],
    ["memory", "$bank2", "size", "ge(16GiB)"],
    ["memory", "$bank3", "size", "ge(16GiB)"],
    ["memory", "$bank4", "size", "ge(16GiB)"],
    ["network", "$eth", "ipv4", "network(10.29.99.0/24)"],
    ["network", "$eth", "serial", "$$mac"],
];

#[test]
fn fixtures_parse() {
    for (name, f) in fixture_facts() {
        assert!(f.len() > 500, "{name}");
        assert!(
            f.as_slice()
                .contains(&Fact::new("memory", "banks", "count", "16"))
        );
    }
}

#[test]
fn fixtures_compute_profile() {
    // 2 CPUs and at least 64 GiB in 16 GiB DIMMs: 05 to 19 have eight
    // DIMMs, 01 to 04 only two.
    let expected: Vec<&str> = FIXTURES[4..].iter().map(|(n, _)| *n).collect();
    assert_eq!(matching_fixtures(&COMPUTE), expected);

    let s = specs(&COMPUTE);
    let all = fixture_facts();
    let (_, f05) = &all[4];
    let m = matches(&s, f05, DEFAULT_STEP_LIMIT).unwrap().unwrap();
    assert_eq!(m.bindings["eth"], "eth0");
    assert_eq!(m.bindings["mac"], "9c:b6:54:88:9c:40");
    assert_eq!(
        m.cmdb_values(),
        BTreeMap::from([("mac", "9c:b6:54:88:9c:40")])
    );
    let banks: BTreeSet<&str> = ["bank1", "bank2", "bank3", "bank4"]
        .iter()
        .map(|b| m.bindings[*b].as_str())
        .collect();
    assert_eq!(banks.len(), 4);
    for (i, &fact) in m.facts.iter().enumerate() {
        let fact = &f05.as_slice()[fact];
        assert!(s.specs[i].accepts(f05, m.facts[i]), "{fact:?}");
    }

    let (_, f01) = &all[0];
    let e = explain(&s, f01, DEFAULT_STEP_LIMIT).unwrap().unwrap();
    assert_eq!(e.spec, 6);
    assert_eq!(
        e.message,
        "no fact satisfies ('memory','$bank3','size','ge(16GiB)') once specs 1 to 6 are matched; \
         facts that satisfy it alone: memory bank:0:0 size is 16 GiB (taken by spec 5); \
         memory bank:1:0 size is 16 GiB (taken by spec 6)"
    );
}

#[test]
fn fixtures_storage_profile() {
    // Only 04 has the extra SATA drives of 1000 GB.
    let storage = [
        ["disk", "$d1", "type", "SATA"],
        ["disk", "$d1", "size", "ge(1000)"],
        ["disk", "$d2", "type", "SATA"],
        ["disk", "$d2", "size", "ge(1000)"],
        ["disk", "$d3", "type", "SATA"],
        ["disk", "$d3", "size", "ge(1000)"],
        ["disk", "$d4", "type", "SATA"],
        ["disk", "$d4", "size", "ge(1000)"],
    ];
    assert_eq!(matching_fixtures(&storage), ["04"]);
    let all = fixture_facts();
    let e = explain(&specs(&storage), &all[0].1, DEFAULT_STEP_LIMIT)
        .unwrap()
        .unwrap();
    assert_eq!(e.spec, 0);
    assert_eq!(
        e.message,
        "no fact satisfies ('disk','$d1','type','SATA'); disk 1I:1:1 type is SAS; \
         disk 1I:1:2 type is SAS"
    );
}

#[test]
fn fixtures_other_profiles() {
    let all: Vec<&str> = FIXTURES.iter().map(|(n, _)| *n).collect();
    // The BIOS and product every blade has, and the serial as CMDB key.
    assert_eq!(
        matching_fixtures(&[
            ["firmware", "bios", "version", "in(I31,I32)"],
            ["firmware", "bios", "date", "regexp(/2013$)"],
            ["system", "product", "serial", "$$serial=regexp(^CZ)"],
            [
                "cpu",
                "physical_0",
                "product",
                "Intel(R) Xeon(R) CPU E5-2650 0 @ 2.00GHz"
            ],
        ]),
        all
    );
    // Other vendors, or a network nobody is on, match nothing.
    assert!(matching_fixtures(&[["system", "product", "vendor", "not(HP)"]]).is_empty());
    assert!(matching_fixtures(&[["network", "$e", "ipv4", "network(192.168.0.0/16)"]]).is_empty());
    // One blade pinned by its serial.
    assert_eq!(
        matching_fixtures(&[["system", "product", "serial", "CZ3404YWP2"]]),
        ["05"]
    );
    // A size test on a value written with a unit-less number of bytes.
    assert_eq!(
        matching_fixtures(&[["memory", "bank:0:2", "size", "range(8GiB,16GiB)"]]),
        all[4..].to_vec()
    );
}

// -- properties ---------------------------------------------------------------

fn arb_fact() -> impl Strategy<Value = Fact> {
    (
        prop::sample::select(vec!["cpu", "disk", "mem"]),
        prop::sample::select(vec!["a", "b", "c"]),
        prop::sample::select(vec!["size", "n"]),
        prop::sample::select(vec!["1", "2", "16GiB", "x", "10.0.0.1", "2001:db8::1", "a"]),
    )
        .prop_map(|(c, t, k, v)| Fact::new(c, t, k, v))
}

fn arb_spec() -> impl Strategy<Value = [String; 4]> {
    (
        prop::sample::select(vec!["cpu", "disk", "mem"]),
        prop::sample::select(vec![
            "a",
            "b",
            "$t1",
            "$t2",
            "$t3",
            "in(a,c)",
            "$t1=regexp(^[ab]$)",
        ]),
        prop::sample::select(vec!["size", "n", "$k1", "$k2"]),
        prop::sample::select(vec![
            "1",
            "x",
            "a",
            "$v1",
            "$v2",
            "$t1",
            "ge(2)",
            "le(16GiB)",
            "not(x)",
            "network(10.0.0.0/8)",
            "or(x,1)",
            "regexp(^2)",
            "$$v3",
        ]),
    )
        .prop_map(|(c, t, k, v)| [c, t, k, v].map(String::from))
}

fn outcome(list: &[[String; 4]], inv: Vec<Fact>) -> bool {
    let s = SpecSet::parse(list).expect("generated specs parse");
    matches(&s, &Facts::new(inv), usize::MAX)
        .expect("no limit")
        .is_some()
}

/// Tries every assignment of distinct facts to specs, in spec order.
fn brute_force(s: &SpecSet, f: &Facts) -> bool {
    fn go(
        s: &SpecSet,
        f: &Facts,
        i: usize,
        used: &mut Vec<bool>,
        b: &mut Vec<Option<String>>,
    ) -> bool {
        if i == s.len() {
            return true;
        }
        for fact in 0..f.len() {
            if used[fact] || !s.specs[i].accepts(f, fact) {
                continue;
            }
            let saved = b.clone();
            let mut ok = true;
            for (field, p) in s.specs[i].fields.iter().enumerate() {
                if let Pattern::Var { id, .. } = p {
                    let text = f.as_slice()[fact].field(field).to_owned();
                    match &b[*id] {
                        Some(bound) if *bound != text => ok = false,
                        Some(_) => {}
                        None => b[*id] = Some(text),
                    }
                }
            }
            if ok {
                used[fact] = true;
                if go(s, f, i + 1, used, b) {
                    return true;
                }
                used[fact] = false;
            }
            *b = saved;
        }
        false
    }
    go(
        s,
        f,
        0,
        &mut vec![false; f.len()],
        &mut vec![None; s.variables().len()],
    )
}

/// Checks a match against the rules directly.
fn valid(s: &SpecSet, f: &Facts, m: &Match) -> bool {
    let mut seen = BTreeSet::new();
    m.facts.len() == s.len()
        && m.facts.iter().all(|&fact| seen.insert(fact))
        && s.specs.iter().zip(&m.facts).all(|(spec, &fact)| {
            spec.accepts(f, fact)
                && spec.fields.iter().enumerate().all(|(i, p)| match p {
                    Pattern::Var { id, .. } => {
                        m.bindings.get(&s.vars[*id]).map(String::as_str)
                            == Some(f.as_slice()[fact].field(i))
                    }
                    _ => true,
                })
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn search_agrees_with_brute_force(
        list in prop::collection::vec(arb_spec(), 0..5),
        inv in prop::collection::vec(arb_fact(), 0..8),
    ) {
        let s = SpecSet::parse(&list).unwrap();
        let f = Facts::new(inv);
        let found = matches(&s, &f, usize::MAX).unwrap();
        prop_assert_eq!(found.is_some(), brute_force(&s, &f));
        if let Some(m) = &found {
            prop_assert!(valid(&s, &f, m), "{:?}", m);
        }
        let why = explain(&s, &f, usize::MAX).unwrap();
        prop_assert_eq!(why.is_none(), found.is_some());
    }

    #[test]
    fn irrelevant_facts_never_change_the_outcome(
        list in prop::collection::vec(arb_spec(), 0..6),
        inv in prop::collection::vec(arb_fact(), 0..10),
        noise in prop::collection::vec((arb_fact(), any::<prop::sample::Index>()), 0..10),
    ) {
        let before = outcome(&list, inv.clone());
        let mut noisy = inv;
        for (mut fact, at) in noise {
            fact.class = "unrelated".into();
            let at = at.index(noisy.len() + 1);
            noisy.insert(at, fact);
        }
        prop_assert_eq!(outcome(&list, noisy), before);
    }

    #[test]
    fn spec_order_never_changes_the_outcome(
        (list, shuffled) in prop::collection::vec(arb_spec(), 0..6)
            .prop_flat_map(|l| (Just(l.clone()), Just(l).prop_shuffle())),
        inv in prop::collection::vec(arb_fact(), 0..10),
    ) {
        prop_assert_eq!(outcome(&list, inv.clone()), outcome(&shuffled, inv));
    }

    #[test]
    fn parser_never_panics(text in ".{0,40}") {
        let _ = SpecSet::parse(&[["c", "t", "k", text.as_str()]]);
    }

    #[test]
    fn parser_never_panics_on_syntax_soup(
        text in "[a-z$=(),' \"0-9.:/]{0,30}",
    ) {
        let _ = SpecSet::parse(&[[text.as_str(), "t", "k", text.as_str()]]);
    }
}
