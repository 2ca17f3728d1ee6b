//! Parsing CSV bank transactions (`id,date,account,amount,description`) into typed
//! records, keeping every line that does not parse, with the reason, for a separate output.

use serde::{Deserialize, Serialize};
use sluice_sdk::udfs;

/// One parsed transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    pub id: i64,
    pub date: String,
    pub account: String,
    pub amount: f64,
    pub description: String,
}

/// A line that is not a transaction, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    pub line: String,
    pub reason: String,
}

/// Parses one CSV line. The description is the rest of the line, commas included.
pub fn parse(line: &str) -> Result<Transaction, Rejected> {
    parse_fields(line).map_err(|reason| Rejected {
        line: line.to_owned(),
        reason,
    })
}

fn parse_fields(line: &str) -> Result<Transaction, String> {
    let fields: Vec<&str> = line.splitn(5, ',').map(str::trim).collect();
    let [id, date, account, amount, description] = fields[..] else {
        return Err(format!(
            "expected 5 comma-separated fields, found {}",
            fields.len()
        ));
    };
    let id = id
        .parse()
        .map_err(|_| format!("id `{id}` is not an integer"))?;
    if !is_iso_date(date) {
        return Err(format!("date `{date}` is not YYYY-MM-DD"));
    }
    if account.is_empty() {
        return Err("account is empty".into());
    }
    let amount: f64 = amount
        .parse()
        .ok()
        .filter(|amount: &f64| amount.is_finite())
        .ok_or_else(|| format!("amount `{amount}` is not a number"))?;
    Ok(Transaction {
        id,
        date: date.to_owned(),
        account: account.to_owned(),
        amount,
        description: description.to_owned(),
    })
}

fn is_iso_date(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    matches!(parts[..], [y, m, d]
        if y.len() == 4 && m.len() == 2 && d.len() == 2
        && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit()))
        && (1..=12).contains(&m.parse::<u8>().unwrap_or(0))
        && (1..=31).contains(&d.parse::<u8>().unwrap_or(0)))
}

/// The transaction of a parse result, if it parsed.
pub fn parsed(result: Result<Transaction, Rejected>) -> Option<Transaction> {
    result.ok()
}

/// The rejected line of a parse result, if it did not parse.
pub fn rejected(result: Result<Transaction, Rejected>) -> Option<Rejected> {
    result.err()
}

/// Keys a transaction by its account, for joins with account reference data.
pub fn by_account(transaction: Transaction) -> (String, Transaction) {
    (transaction.account.clone(), transaction)
}

/// Keys a transaction's amount by its account, for per-account aggregates.
pub fn amount_by_account(transaction: Transaction) -> (String, f64) {
    (transaction.account, transaction.amount)
}

/// A running average: the sum of amounts and how many there were.
pub type Average = (f64, i64);

/// combineByKey's createCombiner: an average of one amount.
pub fn average_of(amount: f64) -> Average {
    (amount, 1)
}

/// combineByKey's mergeValue: one more amount into an average.
pub fn add_to_average((sum, count): Average, amount: f64) -> Average {
    (sum + amount, count + 1)
}

/// combineByKey's mergeCombiners: two averages into one.
pub fn merge_averages((sum_a, count_a): Average, (sum_b, count_b): Average) -> Average {
    (sum_a + sum_b, count_a + count_b)
}

/// The mean of an average.
pub fn mean((sum, count): Average) -> f64 {
    sum / count as f64
}

udfs! {
    map parse,
    flat_map parsed,
    flat_map rejected,
    map by_account,
    map amount_by_account,
    map average_of,
    fold add_to_average,
    reduce merge_averages,
    map mean,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_good_line_and_explains_bad_ones() {
        let good = parse("7,2024-03-01,ACC-1,-12.50,coffee, with milk").unwrap();
        assert_eq!(good.amount, -12.5);
        assert_eq!(good.description, "coffee, with milk");
        assert!(
            parse("x,2024-03-01,A,1,d")
                .unwrap_err()
                .reason
                .contains("id `x`")
        );
        assert!(
            parse("1,2024-13-01,A,1,d")
                .unwrap_err()
                .reason
                .contains("date")
        );
        assert!(
            parse("1,2024-03-01,A,lots,d")
                .unwrap_err()
                .reason
                .contains("amount")
        );
        assert!(
            parse("garbage")
                .unwrap_err()
                .reason
                .contains("5 comma-separated")
        );
    }
}
