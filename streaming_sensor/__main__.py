"""``python -m streaming_sensor``: the sidecar (the same as ``cryptoflow stream``)."""

import sys

from streaming_sensor.sidecar import main

sys.exit(main())
