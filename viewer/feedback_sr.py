"""Routes for issue 5 (feedback and discrepancy review), filled in by the engineer working on it."""

from fastapi import APIRouter

router = APIRouter()
