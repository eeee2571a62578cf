#!/bin/sh
# A stdin→stdout program for draven-watchdog (or the process mode): counts the words of the
# payload and answers JSON.
words=$(wc -w | tr -d ' ')
printf '{"words": %s, "invocation_id": "%s"}\n' "$words" "$DRAVEN_INVOCATION_ID"
