import sys

from sonodiff.cli import main

sys.exit(main())
