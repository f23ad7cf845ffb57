import sys

from ofasearch.cli import main

sys.exit(main())
