//! Anthropic's Messages API as an inbound protocol (`POST /v1/messages`):
//! translation of Anthropic requests into OpenAI chat requests (the
//! gateway's canonical form) and of OpenAI responses, streams and errors
//! back into Anthropic's shapes.
