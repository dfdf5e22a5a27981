"""`wwwserve scheduler`: the centralized reference of the benchmark (service.py has the whole story)."""

from wwwserve.scheduler.service import Scheduler, run_scheduler
from wwwserve.scheduler.settings import SchedulerSettings

__all__ = ["Scheduler", "SchedulerSettings", "run_scheduler"]
