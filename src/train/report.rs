//! Results as `key=value` lines, the form every demo ends with: easy to read,
//! to `grep` and to parse.

/// The `key=value` lines of `results`, one a pair, in order.
///
/// ```
/// let text = adgraph::train::report_lines(&[("steps", "100".to_string()), ("loss", format!("{:.3}", 0.25))]);
/// assert_eq!(text, "steps=100\nloss=0.250\n");
/// ```
pub fn report_lines(results: &[(&str, String)]) -> String {
    results.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

/// Prints the results as `key=value` lines on stdout (on rank 0 only in a
/// distributed run: nothing where [`is_primary`](crate::train::is_primary) is false).
pub fn report(results: &[(&str, String)]) {
    if !crate::train::is_primary() {
        return;
    }
    print!("{}", report_lines(results));
}
