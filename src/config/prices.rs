//! Default prices (USD per million tokens) for well-known models, used to
//! count cost when the config's `[prices]` table does not name a model.
//! Taken from the providers' public price pages as of 2025-06; prices change,
//! so production configs should state their own.

use super::Price;

pub const TAKEN: &str = "2025-06";

pub const DEFAULTS: &[(&str, Price)] = &[
    ("gpt-4o", Price::new(2.50, 10.00)),
    ("gpt-4o-mini", Price::new(0.15, 0.60)),
    ("gpt-4.1", Price::new(2.00, 8.00)),
    ("gpt-4.1-mini", Price::new(0.40, 1.60)),
    ("gpt-4.1-nano", Price::new(0.10, 0.40)),
    ("o3-mini", Price::new(1.10, 4.40)),
    ("text-embedding-3-small", Price::new(0.02, 0.0)),
    ("text-embedding-3-large", Price::new(0.13, 0.0)),
    ("claude-3-5-haiku-latest", Price::new(0.80, 4.00)),
    ("claude-3-7-sonnet-latest", Price::new(3.00, 15.00)),
    ("claude-sonnet-4-0", Price::new(3.00, 15.00)),
    ("claude-opus-4-0", Price::new(15.00, 75.00)),
    ("gemini-2.0-flash", Price::new(0.10, 0.40)),
    ("gemini-2.5-flash", Price::new(0.30, 2.50)),
    ("gemini-2.5-pro", Price::new(1.25, 10.00)),
];
