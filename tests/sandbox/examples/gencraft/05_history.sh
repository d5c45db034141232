curl "https://www.gencraft.cc/api/v1/history?page=1&limit=20" \
-H "Authorization: Bearer <your_api_key>"
