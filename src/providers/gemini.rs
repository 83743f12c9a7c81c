//! Google Gemini's generateContent API: translation between OpenAI chat
//! completions and Gemini (requests, responses, streams, errors).
