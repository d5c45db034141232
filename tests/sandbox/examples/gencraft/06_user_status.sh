curl https://www.gencraft.cc/api/v1/user/status \
-H "Authorization: Bearer <your_api_key>"
