"""Runs an OpenAI Agents SDK agent with one function tool through the gateway.

Usage: python openai_agents_client.py BASE_URL
The agent uses the SDK's default model class (the Responses API) on a client
pointed at the gateway; tracing export is off, so nothing leaves loopback.
Prints one JSON object; tests/responses_sdk.rs asserts on it.
"""

import json
import sys

from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

set_tracing_disabled(True)
client = AsyncOpenAI(base_url=sys.argv[1], api_key="unused-by-the-gateway", max_retries=0, timeout=20)
calls = []


@function_tool
def get_weather(location: str, unit: str = "celsius") -> str:
    """The weather in a city."""
    calls.append({"location": location, "unit": unit})
    return f"sunny, 21 degrees {unit} in {location}"


agent = Agent(
    name="assistant",
    instructions="Answer with the weather tool.",
    tools=[get_weather],
    model=OpenAIResponsesModel(model="conv", openai_client=client),
)
result = Runner.run_sync(agent, "What is the weather in Paris?")
print(json.dumps({"final_output": result.final_output, "calls": calls, "turns": len(result.raw_responses)}))
