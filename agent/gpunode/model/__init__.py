"""The model floor: what judgement is made of (profile data). See docs/ARCHITECTURE.md, Floors."""
