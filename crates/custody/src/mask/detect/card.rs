//! Payment card numbers: 13 to 19 digits that pass the Luhn check *and* start with a prefix a
//! card network issues at that length. The Luhn check alone accepts one random digit string in
//! ten; the prefixes and lengths cut that by an order of magnitude (measured in the tests below
//! and reported in docs/masking.md).
//!
//! The table follows the issuer identification number (IIN) ranges the networks publish, as
//! collected in the "Payment card number" article of the English Wikipedia (ISO/IEC 7812).

/// `(first prefix, last prefix, lengths)`: numbers whose first `first.len()` digits lie in
/// `first..=last` and whose length is one of `lengths`.
const NETWORKS: &[(&str, &str, &[usize])] = &[
    // Visa (Visa Electron is inside 4).
    ("4", "4", &[13, 16, 19]),
    // Mastercard.
    ("51", "55", &[16]),
    ("2221", "2720", &[16]),
    // American Express.
    ("34", "34", &[15]),
    ("37", "37", &[15]),
    // Discover (with the China UnionPay co-branded range), and Discover/RuPay/Troy at 65.
    ("6011", "6011", &[16, 17, 18, 19]),
    ("644", "649", &[16, 17, 18, 19]),
    ("65", "65", &[16, 17, 18, 19]),
    // China UnionPay.
    ("62", "62", &[16, 17, 18, 19]),
    // Diners Club International and Carte Blanche.
    ("36", "36", &[14, 15, 16, 17, 18, 19]),
    ("300", "305", &[14, 15, 16, 17, 18, 19]),
    ("38", "39", &[14, 15, 16, 17, 18, 19]),
    // JCB.
    ("3528", "3589", &[16, 17, 18, 19]),
    // Maestro.
    ("5018", "5018", &[13, 14, 15, 16, 17, 18, 19]),
    ("5020", "5020", &[13, 14, 15, 16, 17, 18, 19]),
    ("5038", "5038", &[13, 14, 15, 16, 17, 18, 19]),
    ("5893", "5893", &[13, 14, 15, 16, 17, 18, 19]),
    ("6304", "6304", &[13, 14, 15, 16, 17, 18, 19]),
    ("6759", "6759", &[13, 14, 15, 16, 17, 18, 19]),
    ("6761", "6763", &[13, 14, 15, 16, 17, 18, 19]),
    // Mir.
    ("2200", "2204", &[16, 17, 18, 19]),
    // RuPay.
    ("60", "60", &[16]),
    ("81", "82", &[16]),
    ("508", "508", &[16]),
];

/// Does `digits` (ASCII digits only) pass the Luhn check?
fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut d = u32::from(d - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// Does a network issue numbers of this length with this prefix?
fn issued(digits: &[u8]) -> bool {
    NETWORKS.iter().any(|(first, last, lengths)| {
        let k = first.len();
        lengths.contains(&digits.len()) && {
            let prefix = &digits[..k];
            prefix >= first.as_bytes() && prefix <= last.as_bytes()
        }
    })
}

/// Is `digits` (a string of ASCII digits, no separators) a payment card number?
pub fn is_card_number(digits: &str) -> bool {
    let d = digits.as_bytes();
    (13..=19).contains(&d.len()) && d.iter().all(u8::is_ascii_digit) && issued(d) && luhn(d)
}

/// The card numbers in a run of digits of `text[start..end]` (single spaces or dashes between
/// groups): windows of 13 to 19 digits that start and end at group boundaries and are card
/// numbers, longest first, left to right. "1 4111 1111 1111 1111" holds one; so does a run of
/// two cards.
pub(super) fn in_run(text: &str, start: usize, end: usize) -> impl Iterator<Item = (usize, usize)> {
    let run = &text[start..end];
    // Each group's byte range in `text`.
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut group_start = None;
    for (i, c) in run.char_indices() {
        match (c.is_ascii_digit(), group_start) {
            (true, None) => group_start = Some(i),
            (false, Some(g)) => {
                groups.push((start + g, start + i));
                group_start = None;
            }
            _ => {}
        }
    }
    if let Some(g) = group_start {
        groups.push((start + g, end));
    }
    let mut found = Vec::new();
    let mut g = 0;
    while g < groups.len() {
        let mut best = None;
        let mut digits = String::new();
        for (h, (a, b)) in groups.iter().enumerate().skip(g) {
            digits.push_str(&text[*a..*b]);
            if digits.len() > 19 {
                break;
            }
            if is_card_number(&digits) {
                best = Some(h);
            }
        }
        match best {
            Some(h) => {
                found.push((groups[g].0, groups[h].1));
                g = h + 1;
            }
            None => g += 1,
        }
    }
    found.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_numbers_of_each_network_are_cards_and_near_misses_are_not() {
        for card in [
            "4111111111111111",    // Visa
            "4222222222222",       // Visa, 13 digits
            "5500000000000004",    // Mastercard
            "2223003122003222",    // Mastercard 2-series
            "378282246310005",     // American Express
            "6011111111111117",    // Discover
            "3530111333300000",    // JCB
            "30569309025904",      // Diners Club
            "6200000000000005",    // UnionPay
            "6759649826438453",    // Maestro
            "4111111111111111110", // Visa, 19 digits
        ] {
            assert!(is_card_number(card), "{card}");
        }
        for not in [
            "4111111111111112",  // fails Luhn
            "1234567890123452",  // passes Luhn, no network issues 1…
            "411111111111116",   // passes Luhn; Visa has no 15-digit numbers
            "37828224631003",    // passes Luhn; too short for American Express
            "550000000000004",   // passes Luhn; Mastercard numbers have 16 digits
            "9999999999999995",  // passes Luhn; no network
            "41111111111111113", // passes Luhn; Visa has no 17-digit numbers
            "4111-1111",         // not digits
        ] {
            assert!(!is_card_number(not), "{not}");
        }
    }

    /// Random digit strings of 13 to 19 digits: how many a detector takes for a card. Luhn alone
    /// accepts about one in ten; with the networks' prefixes and lengths, far fewer. The rates
    /// are printed (`cargo test -p custody --lib card_false_positives -- --nocapture`) and
    /// reported in docs/masking.md.
    #[test]
    fn card_false_positives_on_random_digit_strings() {
        const N: u32 = 1_000_000;
        // splitmix64: a fixed seed, so the numbers in the docs are reproducible.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let (mut luhn_only, mut now) = (0u32, 0u32);
        let mut digits = Vec::with_capacity(19);
        for _ in 0..N {
            let len = 13 + usize::try_from(next() % 7).unwrap();
            digits.clear();
            digits.extend((0..len).map(|_| b'0' + u8::try_from(next() % 10).unwrap()));
            if luhn(&digits) {
                luhn_only += 1;
            }
            if is_card_number(std::str::from_utf8(&digits).unwrap()) {
                now += 1;
            }
        }
        let rate = |n: u32| f64::from(n) / f64::from(N) * 100.0;
        println!(
            "card_number false positives on {N} random digit strings of 13-19 digits: Luhn only {:.3}%, Luhn + network prefix and length {:.3}%",
            rate(luhn_only),
            rate(now)
        );
        assert!(
            (9.5..10.5).contains(&rate(luhn_only)),
            "{}",
            rate(luhn_only)
        );
        assert!(rate(now) < 1.5, "{}", rate(now));
    }
}
