import sys

from rsicrc.pipeline.cli import main

sys.exit(main())
