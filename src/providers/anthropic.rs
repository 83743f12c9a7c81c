//! Anthropic's Messages API: translation between OpenAI chat completions and
//! Anthropic messages (requests, responses, streams, errors).
