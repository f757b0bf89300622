import sys

from otel_mta.cli import main

sys.exit(main())
